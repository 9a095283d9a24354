"""What every evaluator shares: input checks, the class count, and scores computed from stored outcomes.

Evaluators keep references to the caller's embeddings and only ever read them: normalised copies are made where
needed (a whole matrix for the linear probe, a block at a time for the searches), so that neither the caller's
arrays nor any global state change, and memory stays near the size of the inputs.
"""

from abc import ABC, abstractmethod
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from tti_eval.common.base import Embeddings
from tti_eval.common.errors import InvalidEmbeddingsError
from tti_eval.common.vectors import check_vectors

from .metrics import N_RESAMPLES, SEED, Score, classification_scores


class EvaluationModel(ABC):
    # Evaluators that read the train file's class (text) embeddings; the orchestrator skips them when there are none.
    needs_class_embeddings: ClassVar[bool] = False

    def __init__(
        self,
        train_embeddings: Embeddings,
        validation_embeddings: Embeddings,
        num_classes: int | None = None,
    ) -> None:
        check_vectors(train_embeddings.images, "train images")
        check_vectors(validation_embeddings.images, "validation images")
        if train_embeddings.dim != validation_embeddings.dim:
            raise InvalidEmbeddingsError(
                f"Train images have dimension {train_embeddings.dim} but validation images have dimension "
                f"{validation_embeddings.dim}; build both splits with the same model."
            )
        self._train = train_embeddings
        self._val = validation_embeddings
        seen = int(max(train_embeddings.labels.max(), validation_embeddings.labels.max())) + 1
        if num_classes is not None and num_classes < seen:
            raise InvalidEmbeddingsError(
                f"The labels use {seen} classes but only {num_classes} are declared; rebuild the embeddings."
            )
        self._num_classes = seen if num_classes is None else num_classes
        self.notes: list[str] = []  # sentences that qualify the scores (e.g. a solver that did not converge)

    @classmethod
    @abstractmethod
    def title(cls) -> str: ...

    @staticmethod
    def get_default_params() -> dict[str, Any]:
        return {}

    @classmethod
    def neighbour_request(cls, params: dict[str, Any]) -> tuple[int, int]:
        """How many (validation → train, train → validation) nearest neighbours this evaluator reads, so that one
        search can serve every evaluator of a pair; pass the result to them as `neighbours=`."""
        return 0, 0

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @abstractmethod
    def evaluate(self) -> float:
        """The primary score, as the original tool defined it."""

    @abstractmethod
    def scores(self, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> dict[str, Score]:
        """Every metric with its bootstrap interval, from the outcomes `evaluate` stored (nothing is re-run)."""


class ClassificationModel(EvaluationModel):
    @abstractmethod
    def _predict(self) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities [n_val, num_classes], predicted classes [n_val]) for the validation images."""

    @cached_property
    def _predictions(self) -> tuple[np.ndarray, np.ndarray]:
        return self._predict()

    def predict(self) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities [n_val, num_classes], predicted classes [n_val]); computed once, then stored."""
        return self._predictions

    def evaluate(self) -> float:
        _, predicted = self.predict()
        return float((predicted == self._val.labels).astype(float).mean())

    def scores(self, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> dict[str, Score]:
        probabilities, predicted = self.predict()
        return classification_scores(self._val.labels, probabilities, predicted, n_resamples, seed)
