import warnings
from typing import Any

import numpy as np

from tti_eval.common.base import Embeddings
from tti_eval.common.errors import InvalidEmbeddingsError

from .base import ClassificationModel
from .utils import normalize

# The regularisation strengths that cross-validation chooses from (the original tool's grid).
C_GRID = (1e-3, 1e-2, 1e-1, 1e0, 1e1, 1e2, 1e3)
MAX_FOLDS = 5


class LinearProbeClassifier(ClassificationModel):
    """Logistic regression fit on the L2-normalised train images, scored on the validation images.

    By default this is the original tool's model (scikit-learn `LogisticRegression(random_state=0)`, default
    parameters, float32 inputs), so scores stay comparable with it. `cross_validate=True` instead chooses C from
    `C_GRID` by stratified k-fold cross-validation (k = 5, or fewer for classes that small) on the train images
    only; the validation images are used for nothing but the final score.
    """

    def __init__(
        self,
        train_embeddings: Embeddings,
        validation_embeddings: Embeddings,
        num_classes: int | None = None,
        cross_validate: bool = False,
    ) -> None:
        super().__init__(train_embeddings, validation_embeddings, num_classes)
        self.cross_validate = cross_validate
        self.classifier = self._fit(normalize(train_embeddings.images), train_embeddings.labels)

    @classmethod
    def title(cls) -> str:
        return "linear_probe"

    @staticmethod
    def get_default_params() -> dict[str, Any]:
        return {"cross_validate": False}

    def _fit(self, images: np.ndarray, labels: np.ndarray):
        # scikit-learn loads in about a second; only pay for it when a probe is actually fit.
        from sklearn.dummy import DummyClassifier
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
        from sklearn.model_selection import StratifiedKFold

        class_sizes = np.bincount(labels)
        class_sizes = class_sizes[class_sizes > 0]
        if len(class_sizes) == 1:
            self.notes.append("The train images hold a single class, so the probe predicts it for every image.")
            return DummyClassifier(strategy="prior").fit(images, labels)
        if self.cross_validate:
            folds = min(MAX_FOLDS, int(class_sizes.min()))
            if folds < 2:
                raise InvalidEmbeddingsError(
                    "Cross-validating the linear probe needs at least 2 train images per class; "
                    "evaluate without cross-validation or add images."
                )
            classifier = LogisticRegressionCV(
                Cs=list(C_GRID),
                cv=StratifiedKFold(n_splits=folds),
                scoring="accuracy",
                l1_ratios=(0.0,),
                random_state=0,
            )
        else:
            classifier = LogisticRegression(random_state=0)

        # Non-convergence becomes a note on the score instead of a console warning per pair; scikit-learn's notices
        # about its own coming API changes (FutureWarning; C_ is read either way) mean nothing to the user.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            classifier.fit(images, labels)
        for warning in caught:
            if not issubclass(warning.category, ConvergenceWarning | FutureWarning):
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        if any(issubclass(warning.category, ConvergenceWarning) for warning in caught):
            self.notes.append(
                f"The solver stopped at its iteration limit ({classifier.max_iter}) before converging, "
                "as in the original tool."
            )
        if self.cross_validate:
            chosen = float(np.ravel(classifier.C_)[0])
            self.notes.append(f"C = {chosen:g}, chosen by {folds}-fold cross-validation on the train images.")
        return classifier

    def _predict(self) -> tuple[np.ndarray, np.ndarray]:
        known = self.classifier.predict_proba(normalize(self._val.images))
        # Columns follow the classes seen in train; widen to every class so that a column index is a label.
        probabilities = np.zeros((len(known), self.num_classes), dtype=known.dtype)
        probabilities[:, self.classifier.classes_] = known
        return probabilities, probabilities.argmax(axis=1)
