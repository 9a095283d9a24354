from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tti_eval.common.base import Embeddings
from tti_eval.common.errors import InvalidEmbeddingsError
from tti_eval.common.vectors import row_chunks

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


@register_evaluator
class LinearProbeClassifier(ClassificationModel):
    """Logistic regression fit on the L2-normalised train images, scored on the validation images.

    By default this is the original tool's model, scikit-learn's `LogisticRegression(random_state=0)` with default
    parameters (lbfgs, C = 1), fit by `fit_logistic_regression` in bounded memory, so scores stay comparable with it.
    `cross_validate=True` instead chooses C from `C_grid` by stratified k-fold cross-validation (`max_folds`, or
    fewer for classes that small) on the train images only, then refits on all of them; the validation images are
    used for nothing but the final score.
    """

    spec = EvaluatorSpec(
        title="linear_probe",
        description="logistic regression fit on the train images",
        main_metric=ACCURACY,
        metrics=CLASSIFICATION_METRICS,
        params=LinearProbeParams,
    )

    def __init__(
        self,
        train_embeddings: Embeddings,
        validation_embeddings: Embeddings,
        num_classes: int | None = None,
        **params: Any,
    ) -> None:
        super().__init__(train_embeddings, validation_embeddings, num_classes, **params)
        # The classes seen in train, in label order: the model's columns.
        self.classes, encoded = np.unique(train_embeddings.labels, return_inverse=True)
        images = train_embeddings.images  # normalised a block at a time by the fit, never copied whole
        several = len(self.classes) > 1
        self.C = self._choose_C(images, encoded) if self.params.cross_validate and several else self.params.C
        self.model = self._fit(images, encoded, self.C) if len(self.classes) > 1 else None
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
