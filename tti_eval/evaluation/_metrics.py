"""Scores with their uncertainty: the metrics evaluators declare, bootstrap intervals, and the result of a run.

Every metric is computed from per-item outcomes that the evaluator stored once (its predictions, or its per-query
retrieval scores), so an interval costs resampling those arrays, never re-running the evaluator. All metrics of one
evaluator resample with the same seed, hence the same resamples, and the intervals of a run are reproducible.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tti_eval.common.vectors import row_chunks

if TYPE_CHECKING:  # comparison imports this package; its result models are only annotations here
    from tti_eval.comparison.results import PerClassResult

N_RESAMPLES = 1000
SEED = 0
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Metric:
    """What a score measures: `name` keys it in results and JSON, `label` heads CSV columns, tables and charts."""

    name: str
    label: str
    higher_is_better: bool = True


ACCURACY = Metric("accuracy", "Accuracy")
TOP5_ACCURACY = Metric("top5_accuracy", "Top-5 accuracy")
MEAN_PER_CLASS_RECALL = Metric("mean_per_class_recall", "Mean per-class recall")
# What every classifier reports (top-5 only with 5 classes or more: below that it is always 1).
CLASSIFICATION_METRICS = (ACCURACY, TOP5_ACCURACY, MEAN_PER_CLASS_RECALL)


def scored_on(metric_label: str, splits: Iterable[str]) -> str:
    """How every table and chart names what it shows, e.g. "Accuracy on the validation split"."""
    return f"{metric_label} on the {' / '.join(dict.fromkeys(splits))} split"


def images_scored(counts: Iterable[int]) -> str:
    """How many images a score is over, e.g. "270 images" ("270 or 268 images" where models scored different sets)."""
    return f"{' or '.join(dict.fromkeys(str(n) for n in counts))} images"


@dataclass(frozen=True)
class Score:
    """A point estimate and its bootstrap confidence interval [low, high]."""

    value: float
    low: float
    high: float


def _outcome() -> np.ndarray | None:
    # Outcome arrays take no part in equality (numpy's == is element-wise) nor in the repr (they can be long).
    return field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class EvaluationResult:
    """All metrics of one evaluator on one (model, dataset) pair; `note` says anything that qualifies them, and
    `approximate` that they come from an approximate neighbour search (whose recall the note gives).

    The per-item outcomes the metrics were computed from are kept, as plain numpy arrays, so that paired comparisons
    between models on the same images need no re-run (arrays an evaluator does not produce are None):

    - `labels`: the true class of each scored item (int, [n]): validation images for a classifier, train queries
      for retrieval.
    - `predictions`: a classifier's predicted class of each validation image (int, [n]).
    - `top5_hits`: whether each validation image's true class ranks in a classifier's first five (bool, [n]); None
      below five classes. Class probabilities are not kept: [n, classes] floats can outweigh everything else.
    - `per_query_scores`: a retrieval evaluator's score of each query (float64, [n]).

    What the result was computed from, so that it describes itself when saved: the scored `split` (validation or
    test), the evaluator's `params` (defaults included) and any it `chose` (e.g. the linear probe's C), the number of
    train and scored images, the `class_names`, each cached split's stored `fingerprints` (None for a split without
    one), and, for a classifier, its `per_class` recall (with interval), precision, support and confusion matrix.
    """

    model: str
    dataset: str
    evaluator: str
    main_metric: Metric
    metrics: dict[str, Score]
    note: str = ""
    approximate: bool = False
    labels: np.ndarray | None = _outcome()
    predictions: np.ndarray | None = _outcome()
    top5_hits: np.ndarray | None = _outcome()
    per_query_scores: np.ndarray | None = _outcome()
    split: str = "validation"
    params: dict[str, Any] = field(default_factory=dict)
    chosen: dict[str, float] = field(default_factory=dict)
    n_train: int = 0
    n_scored: int = 0
    class_names: tuple[str, ...] | None = None
    fingerprints: dict[str, dict[str, Any] | None] = field(default_factory=dict, repr=False)
    per_class: "PerClassResult | None" = field(default=None, repr=False)

    @property
    def score(self) -> Score:
        """The evaluator's main metric."""
        return self.metrics[self.main_metric.name]


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


def classification_statistics(
    labels: np.ndarray, predictions: np.ndarray, top5_hits: np.ndarray | None
) -> dict[str, Callable[[np.ndarray], float]]:
    """Each classification metric as a function of the indices of the validation images it is computed over: all of
    them for the value, a resample for the interval. Top-5 accuracy only when `top5_hits` are given."""
    correct = predictions == labels
    statistics = {ACCURACY.name: lambda i: float(correct[i].mean())}
    if top5_hits is not None:
        statistics[TOP5_ACCURACY.name] = lambda i: float(top5_hits[i].mean())
    statistics[MEAN_PER_CLASS_RECALL.name] = lambda i: mean_per_class_recall(labels[i], correct[i])
    return statistics


def classification_scores(
    labels: np.ndarray,
    predictions: np.ndarray,
    top5_hits: np.ndarray | None,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> dict[str, Score]:
    """Every classification metric with its interval over resamples of the validation set."""
    n, everything = len(labels), np.arange(len(labels))
    statistics = classification_statistics(labels, predictions, top5_hits)
    return {name: bootstrap(f, n, f(everything), n_resamples, seed) for name, f in statistics.items()}


def mean_score(per_query: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> Score:
    """The mean of per-query scores, with its interval over resamples of the queries."""
    return bootstrap(lambda i: per_query[i].mean(), len(per_query), float(per_query.mean()), n_resamples, seed)
