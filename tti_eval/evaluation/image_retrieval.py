from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tti_eval.common.base import Embeddings
from tti_eval.common.vectors import row_chunks

from ._metrics import N_RESAMPLES, SEED, Metric, Score, mean_score
from .base import EvaluationModel, EvaluatorSpec, register_evaluator

if TYPE_CHECKING:  # the search module imports faiss, which `tti-eval --help` must not wait for
    from ._neighbours import Neighbours

# Precision at R, R being the number of relevant items (here capped at k): the original tool printed it as "accuracy".
R_PRECISION = Metric("r_precision", "R-precision")


class I2IRParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(100, ge=1, description="Validation images each train image retrieves (capped at the split size).")


@register_evaluator
class I2IRetrievalEvaluator(EvaluationModel):
    """Image-to-image retrieval: each train image queries its k nearest validation images (exact L2). With Q the
    smaller of k and the size of its class in validation, its score is the share of its first Q neighbours that
    share its class (0 when its class is absent from validation), i.e. its R-precision with R capped at k; the result
    is the mean over train images."""

    spec = EvaluatorSpec(
        title="I2IR",
        description="image-to-image retrieval of validation images by train images",
        main_metric=R_PRECISION,
        metrics=(R_PRECISION,),
        params=I2IRParams,
        neighbours_train_to_val="k",
        neighbours_capped_by_class=True,
    )

    def __init__(
        self,
        train_embeddings: Embeddings,
        validation_embeddings: Embeddings,
        num_classes: int | None = None,
        neighbours: "Neighbours | None" = None,
        **params: Any,
    ) -> None:
        super().__init__(train_embeddings, validation_embeddings, num_classes, **params)
        self.k = min(self.params.k, len(validation_embeddings.images))
        # Q per train image: the only neighbours its score reads
        self._retrieved = self.spec.neighbour_request(self.params, train_embeddings, validation_embeddings)[1]
        if neighbours is not None:
            neighbours.check_matches(
                len(train_embeddings.images), len(validation_embeddings.images), 0, self._retrieved
            )
        self._neighbours = neighbours

    @cached_property
    def per_query_scores(self) -> np.ndarray:
        """Each train image's retrieval score (float64, [n_train])."""
        from ._neighbours import search_neighbours

        train, val, retrieved = self._train, self._val, self._retrieved
        neighbours = (
            self._neighbours
            if self._neighbours is not None
            else search_neighbours(train.images, val.images, k_train_to_val=retrieved)
        )
        nearest = neighbours.train_to_val[:, : self.k]
        scores = np.zeros(len(nearest), dtype=np.float64)
        for rows in row_chunks(len(nearest)):
            in_scope = np.arange(nearest.shape[1]) < retrieved[rows, None]
            matches = ((val.labels[nearest[rows]] == train.labels[rows, None]) & in_scope).sum(axis=1)
            np.divide(matches, retrieved[rows], out=scores[rows], where=retrieved[rows] > 0)
        return scores

    def evaluate(self) -> float:
        return float(self.per_query_scores.mean())

    def scores(self, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> dict[str, Score]:
        return {R_PRECISION.name: mean_score(self.per_query_scores, n_resamples, seed)}

    def outcomes(self) -> dict[str, np.ndarray]:
        return {"labels": self._train.labels, "per_query_scores": self.per_query_scores}
