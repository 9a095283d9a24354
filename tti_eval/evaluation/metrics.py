"""Scores with their uncertainty: the primary score, top-5 accuracy, mean per-class recall, and bootstrap intervals.

Every metric is computed from per-item outcomes that the evaluator stored once (its predictions, or its per-query
retrieval scores), so an interval costs resampling those arrays, never re-running the evaluator. All metrics of one
evaluator resample with the same seed, hence the same resamples, and the intervals of a run are reproducible.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tti_eval.common.vectors import row_chunks

PRIMARY = "accuracy"  # the original tool's single number (called "Accuracy" in its CSV, for I2IR too)
TOP5 = "top5_accuracy"
PER_CLASS_RECALL = "mean_per_class_recall"
METRIC_LABELS = {PRIMARY: "Accuracy", TOP5: "Top-5 accuracy", PER_CLASS_RECALL: "Mean per-class recall"}

N_RESAMPLES = 1000
SEED = 0
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Score:
    """A point estimate and its bootstrap confidence interval [low, high]."""

    value: float
    low: float
    high: float


@dataclass(frozen=True)
class EvaluationResult:
    """All metrics of one evaluator on one (model, dataset) pair; `note` says anything that qualifies them, and
    `approximate` that they come from an approximate neighbour search (whose recall the note gives)."""

    model: str
    dataset: str
    evaluator: str
    metrics: dict[str, Score]
    note: str = ""
    approximate: bool = False

    @property
    def score(self) -> Score:
        return self.metrics[PRIMARY]


def bootstrap(
    statistic: Callable[[np.ndarray], float],
    n: int,
    value: float,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
) -> Score:
    """Percentile interval of `statistic(indices)` over `n_resamples` draws of n indices with replacement."""
    rng = np.random.default_rng(seed)
    estimates = np.array([statistic(rng.integers(0, n, size=n)) for _ in range(n_resamples)])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(estimates, [tail, 100 - tail])
    return Score(value=value, low=float(low), high=float(high))


def top_k_hits(probabilities: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Whether each true label ranks within the first k, ties going to the lower class index as in `argmax`, so
    that k = 1 reproduces the predictions exactly."""
    hits = np.empty(len(labels), dtype=bool)
    classes = np.arange(probabilities.shape[1])
    for rows in row_chunks(len(labels)):
        p, y = probabilities[rows], labels[rows]
        p_true = p[np.arange(len(y)), y][:, None]
        rank = (p > p_true).sum(axis=1) + ((p == p_true) & (classes < y[:, None])).sum(axis=1)
        hits[rows] = rank < k
    return hits


def mean_per_class_recall(labels: np.ndarray, correct: np.ndarray) -> float:
    """Recall averaged over the classes present in `labels`, so that small classes weigh as much as large ones."""
    counts = np.bincount(labels)
    hits = np.bincount(labels, weights=correct, minlength=len(counts))
    present = counts > 0
    return float((hits[present] / counts[present]).mean())


def classification_scores(
    labels: np.ndarray,
    probabilities: np.ndarray,
    predictions: np.ndarray,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> dict[str, Score]:
    """Accuracy, top-5 accuracy (only with 5 classes or more, below that it is always 1) and mean per-class
    recall, each with its interval over resamples of the validation set."""
    n = len(labels)
    correct = predictions == labels

    def resampled(metric_items: np.ndarray, value: float) -> Score:
        return bootstrap(lambda i: metric_items[i].mean(), n, value, n_resamples, seed)

    scores = {PRIMARY: resampled(correct, float(correct.astype(float).mean()))}
    if probabilities.shape[1] >= 5:
        hits = top_k_hits(probabilities, labels, 5)
        scores[TOP5] = resampled(hits, float(hits.mean()))
    scores[PER_CLASS_RECALL] = bootstrap(
        lambda i: mean_per_class_recall(labels[i], correct[i]),
        n,
        mean_per_class_recall(labels, correct),
        n_resamples,
        seed,
    )
    return scores


def retrieval_scores(per_query: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> dict[str, Score]:
    """The mean of per-query retrieval scores, with its interval over resamples of the queries."""
    return {
        PRIMARY: bootstrap(lambda i: per_query[i].mean(), len(per_query), float(per_query.mean()), n_resamples, seed)
    }
