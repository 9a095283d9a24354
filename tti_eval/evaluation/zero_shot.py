from typing import Any

import numpy as np

from tti_eval.common.base import Embeddings
from tti_eval.common.errors import InvalidEmbeddingsError
from tti_eval.common.vectors import check_vectors, row_chunks

from ._metrics import ACCURACY, CLASSIFICATION_METRICS
from .base import ClassificationModel, EvaluatorSpec, register_evaluator
from .utils import normalize, softmax


@register_evaluator
class ZeroShotClassifier(ClassificationModel):
    """Softmax over the dot products of each validation image with every class (text) embedding of the train file;
    the prediction is the most similar class. Computed a block of validation images at a time."""

    spec = EvaluatorSpec(
        title="zero_shot",
        description="zero-shot classification by the class (prompt) embeddings",
        main_metric=ACCURACY,
        metrics=CLASSIFICATION_METRICS,
        needs_class_embeddings=True,
    )

    def __init__(
        self,
        train_embeddings: Embeddings,
        validation_embeddings: Embeddings,
        num_classes: int | None = None,
        **params: Any,
    ) -> None:
        classes = train_embeddings.classes
        if classes is None:
            raise InvalidEmbeddingsError(
                "Zero-shot needs class embeddings, but the train embeddings have none; rebuild them with a model "
                "that can embed text."
            )
        if num_classes is not None and num_classes != len(classes):
            raise InvalidEmbeddingsError(
                f"The train embeddings hold {len(classes)} class embeddings for {num_classes} classes; rebuild them."
            )
        check_vectors(classes, "class embeddings")
        super().__init__(train_embeddings, validation_embeddings, len(classes), **params)

    def _predict(self) -> tuple[np.ndarray, np.ndarray]:
        class_unit = normalize(self._train.classes)
        images = self._val.images
        probabilities = np.empty((len(images), len(class_unit)), dtype=np.result_type(images, class_unit))
        for rows in row_chunks(len(images)):
            probabilities[rows] = softmax(normalize(images[rows]) @ class_unit.T)
        return probabilities, probabilities.argmax(axis=1)
