from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tti_eval.common.base import Embeddings
from tti_eval.common.errors import InvalidEmbeddingsError
from tti_eval.common.vectors import check_vectors, row_chunks

from ._metrics import ACCURACY, CLASSIFICATION_METRICS
from .base import ClassificationModel, EvaluatorSpec, register_evaluator

if TYPE_CHECKING:  # the fit imports scipy, which `tti-eval --help` must not wait for
    from ._logistic_regression import LogisticModel


class LinearProbeParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    C: float = Field(1.0, gt=0, description="Inverse regularisation strength (scikit-learn's default).")
    cross_validate: bool = Field(False, description="Choose C from C_grid by cross-validation on the train images.")
    C_grid: tuple[float, ...] = Field(
        (1e-3, 1e-2, 1e-1, 1e0, 1e1, 1e2, 1e3), min_length=1, description="The original tool's grid of C values."
    )
    max_folds: int = Field(5, ge=2, description="Cross-validation folds (fewer when the smallest class is smaller).")
    C_search: tuple[float, ...] = Field(
        tuple(10.0**e for e in range(-6, 7)),
        min_length=1,
        description="Scoring the test split: C values tried on the validation split (the CLIP paper's log grid).",
    )
    C_refine: int = Field(
        4,
        ge=0,
        description="Scoring the test split: log-spaced C values then tried on each side of the best grid value, "
        "up to its grid neighbours.",
    )


@register_evaluator
class LinearProbeClassifier(ClassificationModel):
    """Logistic regression fit on the L2-normalised train images, scored on the validation images.

    By default this is the original tool's model, scikit-learn's `LogisticRegression(random_state=0)` with default
    parameters (lbfgs, C = 1), fit by `fit_logistic_regression` in bounded memory, so scores stay comparable with it.
    `cross_validate=True` instead chooses C from `C_grid` by stratified k-fold cross-validation (`max_folds`, or
    fewer for classes that small) on the train images only, then refits on all of them; the validation images are
    used for nothing but the final score.

    Given `tuning_embeddings` (the validation split, when the test split is scored), it follows the CLIP paper's
    protocol instead: C is chosen by accuracy on those images over `C_search`, then over `C_refine` finer values on
    each side of the best, and the probe is refitted on train + tuning images with that C (`chosen["C"]`).
    """

    spec = EvaluatorSpec(
        title="linear_probe",
        description="logistic regression fit on the train images",
        main_metric=ACCURACY,
        metrics=CLASSIFICATION_METRICS,
        params=LinearProbeParams,
        tunes_on_validation=True,
    )

    def __init__(
        self,
        train_embeddings: Embeddings,
        validation_embeddings: Embeddings,
        num_classes: int | None = None,
        tuning_embeddings: Embeddings | None = None,
        **params: Any,
    ) -> None:
        super().__init__(train_embeddings, validation_embeddings, num_classes, **params)
        images, labels = train_embeddings.images, train_embeddings.labels
        if tuning_embeddings is not None:  # one matrix, so the final refit sees train + tuning rows alike
            check_vectors(tuning_embeddings.images, "validation images")
            if tuning_embeddings.dim != train_embeddings.dim or tuning_embeddings.labels.max() >= self.num_classes:
                raise InvalidEmbeddingsError(
                    "The validation embeddings do not match the train embeddings (dimension or classes); rebuild "
                    "all splits of the pair with the same model and dataset definition."
                )
            images = np.concatenate([images, tuning_embeddings.images])
            labels = np.concatenate([labels, tuning_embeddings.labels])
        # The classes seen in the fitted images, in label order: the model's columns.
        self.classes, encoded = np.unique(labels, return_inverse=True)
        # `images` are normalised a block at a time by the fit, never copied whole
        several = len(self.classes) > 1
        if tuning_embeddings is not None and several:
            self.C = self.chosen["C"] = self._choose_C_on_tuning(images, encoded, len(train_embeddings.images))
        elif self.params.cross_validate and several:
            self.C = self.chosen["C"] = self._choose_C(images, encoded)
        else:
            self.C = self.params.C
        self.model = self._fit(images, encoded, self.C) if several else None
        if self.model is None:
            self.notes.append("The train images hold a single class, so the probe predicts it for every image.")
        elif self.model.stop_reason:
            reason = self.model.stop_reason
            self.notes.append(f"The solver stopped before converging ({reason}), as the original's does.")

    def _fit(self, images: np.ndarray, encoded: np.ndarray, C: float, **options) -> "LogisticModel":
        from ._logistic_regression import fit_logistic_regression

        return fit_logistic_regression(images, encoded, len(self.classes), C=C, **options)

    def _choose_C(self, images: np.ndarray, encoded: np.ndarray) -> float:
        from sklearn.model_selection import StratifiedKFold  # scikit-learn loads in about a second

        folds = min(self.params.max_folds, int(np.bincount(encoded).min()))
        if folds < 2:
            raise InvalidEmbeddingsError(
                "Cross-validating the linear probe needs at least 2 train images per class; "
                "evaluate without cross-validation or add images."
            )
        grid = sorted(self.params.C_grid)  # ascending: warm starts walk upwards, ties go to the smaller C
        accuracy = np.zeros(len(grid))
        for fit_rows, test_rows in StratifiedKFold(n_splits=folds).split(images, encoded):
            model = None  # each fold walks the grid upwards, starting every fit from the previous C's solution
            for i, C in enumerate(grid):
                model = self._fit(images, encoded[fit_rows], C, rows=fit_rows, initial=model)
                predicted = model.predict_proba(images[test_rows]).argmax(axis=1)
                accuracy[i] += (predicted == encoded[test_rows]).mean() / folds
        chosen = grid[int(accuracy.argmax())]  # ties go to the stronger regularisation
        self.notes.append(f"C = {chosen:g}, chosen by {folds}-fold cross-validation on the train images.")
        return chosen

    def _choose_C_on_tuning(self, images: np.ndarray, encoded: np.ndarray, n_train: int) -> float:
        """The C of `C_search`, then of the finer values around the best, with the highest accuracy on the tuning
        rows (those from `n_train` on) when fitted on the train rows; ties go to the smaller C."""
        fit_rows, tuning_rows = np.arange(n_train), np.arange(n_train, len(images))
        tried: dict[float, float] = {}

        def walk(values: list[float]) -> None:
            model = None  # ascending values: each fit starts from the previous C's solution
            for C in sorted(set(values) - set(tried)):
                model = self._fit(images, encoded[fit_rows], C, rows=fit_rows, initial=model)
                predicted = model.predict_proba(images[tuning_rows]).argmax(axis=1)
                tried[C] = float((predicted == encoded[tuning_rows]).mean())

        def best() -> float:
            return max(sorted(tried), key=lambda C: tried[C])  # max keeps the first (smallest C) of equals

        grid = sorted(self.params.C_search)
        walk(grid)
        coarse = best()
        position = grid.index(coarse)
        finer = []
        for neighbour in (grid[max(position - 1, 0)], grid[min(position + 1, len(grid) - 1)]):
            if neighbour != coarse:  # log-spaced strictly between the best and its neighbour
                steps = np.arange(1, self.params.C_refine + 1) / (self.params.C_refine + 1)
                finer += [float(v) for v in np.exp(np.log(coarse) + steps * (np.log(neighbour) - np.log(coarse)))]
        walk(finer)
        chosen = best()
        self.notes.append(
            f"C = {chosen:.3g}, chosen on the validation split ({len(tried)} values from {min(tried):g} to "
            f"{max(tried):g}); the probe was refitted on train + validation."
        )
        return chosen

    def _predict(self) -> tuple[np.ndarray, np.ndarray]:
        # Widen the model's columns (the classes seen in train) to every class, so that a column index is a label.
        images = self._val.images
        probabilities = np.zeros((len(images), self.num_classes), dtype=images.dtype)
        if self.model is None:
            probabilities[:, self.classes[0]] = 1.0
        else:
            for rows in row_chunks(len(images)):
                probabilities[rows, self.classes] = self.model.predict_proba(images[rows])
        return probabilities, probabilities.argmax(axis=1)
