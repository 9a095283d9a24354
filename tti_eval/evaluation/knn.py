from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tti_eval.common.base import Embeddings
from tti_eval.common.vectors import row_chunks

from ._metrics import ACCURACY, CLASSIFICATION_METRICS
from .base import ClassificationModel, EvaluatorSpec, register_evaluator
from .utils import normalize, softmax

if TYPE_CHECKING:  # the search module imports faiss, which `tti-eval --help` must not wait for
    from ._neighbours import Neighbours

# Validation rows per chunk when re-measuring distances: the gathered neighbours are [rows, k, dim] float64, 4.3 MiB
# at k = 11 and dim 768, which stays in cache through the five passes over it (512 rows, 34 MiB, took 2-3× longer).
_ROWS = 64


class KNNParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    k: int = Field(11, ge=1, description="Train images that vote for each validation image (capped at the train size).")


@register_evaluator
class WeightedKNNClassifier(ClassificationModel):
    """Each validation image's k nearest train images (exact L2) vote for their class with weight 1/d², d² being
    the squared L2 distance (the original tool's faiss distance); probabilities are the softmax of the per-class
    vote sums.

    A neighbour at distance zero votes float32 max in the original tool, so one exact match takes all the
    probability; several overflowed its sum into NaN. Here the limit of that rule is taken exactly: when a
    validation image has exact matches, the class with the most of them gets all the probability (shared
    equally on a tie) and every other neighbour is outvoted. Memory is O(n_val · k) plus the [n_val, num_classes]
    probabilities.
    """

    spec = EvaluatorSpec(
        title="wKNN",
        description="weighted k-nearest-neighbour vote of train images",
        main_metric=ACCURACY,
        metrics=CLASSIFICATION_METRICS,
        params=KNNParams,
        neighbours_val_to_train="k",
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
        # Capped because faiss would pad with index -1 and vote for the last label.
        self.k = min(self.params.k, len(train_embeddings.images))
        if neighbours is not None:
            neighbours.check_matches(len(train_embeddings.images), len(validation_embeddings.images), self.k, 0)
        self._neighbours = neighbours

    def _predict(self) -> tuple[np.ndarray, np.ndarray]:
        from ._neighbours import search_neighbours

        train, val = self._train, self._val
        neighbours = (
            self._neighbours
            if self._neighbours is not None
            else search_neighbours(train.images, val.images, k_val_to_train=self.k)
        )
        nearest = neighbours.val_to_train[:, : self.k]
        probabilities = np.empty((len(val.images), self.num_classes), dtype=np.float32)
        for rows in row_chunks(len(nearest), _ROWS):
            indices = nearest[rows]
            # Re-measured as |a - b|² in float64, the distance the neighbours are ranked by, rather than taken from a
            # float32 |a|² + |b|² - 2a·b, whose rounding noise around 0 would turn exact copies into huge finite
            # votes and be magnified by 1/d² for near copies (and swamps every distance of a near-collapsed set).
            neighbour_unit = normalize(train.images[indices.ravel()].astype(np.float64)).reshape(*indices.shape, -1)
            difference = neighbour_unit - normalize(val.images[rows].astype(np.float64))[:, None, :]
            squared = np.einsum("nkd,nkd->nk", difference, difference)
            probabilities[rows] = vote_probabilities(squared, train.labels[indices], self.num_classes)
        return probabilities, probabilities.argmax(axis=1)


def vote_probabilities(squared_distances: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Softmax of per-class sums of 1/d² votes; rows with exact matches go to the class with the most of them."""
    n, k = squared_distances.shape
    exact = squared_distances == 0
    has_exact = exact.any(axis=1, keepdims=True)
    inverse = np.divide(1.0, squared_distances, out=np.zeros_like(squared_distances), where=~exact)
    weights = np.where(has_exact, exact, inverse)
    # One bincount over (row, class) cells instead of an [n, classes, k] array of individual votes.
    cells = (np.arange(n)[:, None] * num_classes + labels).ravel()
    votes = np.bincount(cells, weights=weights.ravel(), minlength=n * num_classes).reshape(n, num_classes)
    winners = votes == votes.max(axis=1, keepdims=True)
    return np.where(has_exact, winners / winners.sum(axis=1, keepdims=True), softmax(votes))
