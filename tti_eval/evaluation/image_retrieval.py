from functools import cached_property
from typing import Any

import numpy as np

from tti_eval.common.base import Embeddings
from tti_eval.common.vectors import row_chunks

from ._neighbours import Neighbours, search_neighbours
from .base import EvaluationModel
from .metrics import N_RESAMPLES, SEED, Score, retrieval_scores


class I2IRetrievalEvaluator(EvaluationModel):
    """Image-to-image retrieval: each train image queries its k nearest validation images (exact L2). With Q the
    smaller of k and the size of its class in validation, its score is the share of its first Q neighbours that
    share its class (0 when its class is absent from validation); the result is the mean over train images."""

    def __init__(
        self,
        train_embeddings: Embeddings,
        validation_embeddings: Embeddings,
        num_classes: int | None = None,
        k: int = 100,
        neighbours: Neighbours | None = None,
    ) -> None:
        super().__init__(train_embeddings, validation_embeddings, num_classes)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.k = min(k, len(validation_embeddings.images))
        if neighbours is not None:
            neighbours.check_matches(len(train_embeddings.images), len(validation_embeddings.images), 0, self.k)
        self._neighbours = neighbours

    @classmethod
    def title(cls) -> str:
        return "I2IR"

    @staticmethod
    def get_default_params() -> dict[str, Any]:
        return {"k": 100}

    @classmethod
    def neighbour_request(cls, params: dict[str, Any]) -> tuple[int, int]:
        return 0, params.get("k", cls.get_default_params()["k"])

    @cached_property
    def per_query_scores(self) -> np.ndarray:
        """Each train image's retrieval score (float64, [n_train])."""
        train, val = self._train, self._val
        neighbours = (
            self._neighbours
            if self._neighbours is not None
            else search_neighbours(train.images, val.images, k_train_to_val=self.k)
        )
        nearest = neighbours.train_to_val[:, : self.k]
        class_sizes = np.bincount(val.labels, minlength=self.num_classes)
        retrieved = np.minimum(class_sizes[train.labels], self.k)  # Q per train image
        scores = np.zeros(len(nearest), dtype=np.float64)
        for rows in row_chunks(len(nearest)):
            in_scope = np.arange(self.k) < retrieved[rows, None]
            matches = ((val.labels[nearest[rows]] == train.labels[rows, None]) & in_scope).sum(axis=1)
            np.divide(matches, retrieved[rows], out=scores[rows], where=retrieved[rows] > 0)
        return scores

    def evaluate(self) -> float:
        return float(self.per_query_scores.mean())

    def scores(self, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> dict[str, Score]:
        return retrieval_scores(self.per_query_scores, n_resamples, seed)
