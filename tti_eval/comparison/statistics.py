"""Paired statistics for deciding between models scored on the same images.

Every function works on per-image outcomes (0/1 correctness of a classifier, or a per-query retrieval score) laid out
as columns of one matrix, so one pass over the resamples serves every model and every pair of models at once. A
bootstrap resample is a vector of counts (how often each image was drawn), and every statistic here is linear in
those counts within a resample: the resampled means of all columns are then one matrix product, never a Python loop
per resample. Differences between two models are bootstrapped as the statistic of their per-image difference, which
is what makes the bootstrap paired: both models see the same resampled images.

Resample r is `default_rng(seed).integers(0, n, size=n)` drawn for the r-th time, the same draws that
`tti_eval.evaluation._metrics.bootstrap` makes, so an interval here equals `evaluate`'s interval for the same score.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.stats import binomtest

from tti_eval.evaluation import CONFIDENCE, N_RESAMPLES, SEED

# Bootstrap indices (or signs) drawn at once: 4M int64 values, 32 MiB, whatever the number of images.
_BLOCK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class Intervals:
    """Point estimates of several columns and the bounds of their percentile intervals, one entry per column."""

    value: np.ndarray
    low: np.ndarray
    high: np.ndarray


def _row_blocks(n: int, rows: int) -> Iterator[int]:
    """Sizes of consecutive blocks of `rows` rows of length n, each within the block budget."""
    per_block = max(1, _BLOCK_ELEMENTS // max(n, 1))
    for start in range(0, rows, per_block):
        yield min(per_block, rows - start)


def resample_indices(n: int, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> Iterator[np.ndarray]:
    """Bootstrap indices in blocks of rows; stacked, row r holds the n image indices of resample r."""
    rng = np.random.default_rng(seed)
    for rows in _row_blocks(n, n_resamples):
        yield rng.integers(0, n, size=(rows, n))


def _counts(indices: np.ndarray, n: int) -> np.ndarray:
    """How often each image occurs in each resample: (rows, n) float64, from one bincount over the whole block."""
    rows = indices.shape[0]
    offsets = (np.arange(rows) * n)[:, None]
    return np.bincount((indices + offsets).ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)


def _class_indicator(labels: np.ndarray, num_classes: int) -> sparse.csc_matrix:
    """(n, classes) sparse one-hot matrix of the labels."""
    n = len(labels)
    return sparse.csc_matrix((np.ones(n), (np.arange(n), labels)), shape=(n, num_classes))


def _class_recalls(hits: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Recall per class (last axis) with NaN for classes that have no image (or precision, given the number of
    predictions of each class)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, hits / np.where(support > 0, support, 1), np.nan)


def _statistic(counts: np.ndarray, columns: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """Mean of each column under image weights `counts` (rows = resamples), or its mean per-class recall when labels
    are given: the recall of each class present in the resample, averaged over those classes."""
    if labels is None:
        return counts @ columns / counts.sum(axis=1, keepdims=True)
    indicator = _class_indicator(labels, int(labels.max()) + 1)
    counts_t = np.ascontiguousarray(counts.T)  # the layout sparse products read; a view would be copied per product
    support = (indicator.T @ counts_t).T  # (rows, classes): images of each class in each resample
    estimates = np.empty((counts.shape[0], columns.shape[1]))
    for j in range(columns.shape[1]):  # one sparse product per column, over all resamples at once
        hits = (indicator.multiply(columns[:, j : j + 1]).tocsc().T @ counts_t).T
        estimates[:, j] = np.nanmean(_class_recalls(hits, support), axis=1)
    return estimates


def bootstrap_intervals(
    columns: np.ndarray,
    labels: np.ndarray | None = None,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
) -> Intervals:
    """Percentile intervals of the mean of each column of the (n, m) matrix `columns` (or of its mean per-class
    recall over `labels`), all columns resampled with the same image indices.

    Pass one model's outcomes (0/1 correct, top-5 hits, per-query scores) for its score, or the per-image difference
    of two models' outcomes for the paired interval of their difference: both statistics are linear in the per-image
    outcomes, so the statistic of the difference is the difference of the statistics within every resample."""
    columns = np.asarray(columns, dtype=np.float64)
    n = columns.shape[0]
    unit = np.ones((1, n))
    value = _statistic(unit, columns, labels)[0]
    estimates = np.concatenate(
        [_statistic(_counts(indices, n), columns, labels) for indices in resample_indices(n, n_resamples, seed)]
    )
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(estimates, [tail, 100 - tail], axis=0)
    return Intervals(value=value, low=low, high=high)


def sign_flip_p_values(
    outcomes: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    n_permutations: int = N_RESAMPLES,
    seed: int = SEED,
) -> np.ndarray:
    """Two-sided p-value of a zero mean paired difference, column `first[k]` minus column `second[k]` of the (n, m)
    matrix of per-query outcomes, for each k.

    Under the null hypothesis that two models are exchangeable on each query, the sign of each query's difference is
    a fair coin: p = (1 + #permutations whose |mean| reaches the observed |mean|) / (1 + n_permutations). All pairs
    see the same sign vectors, so a permuted difference is the difference of the permuted sums of its two columns:
    one product per model, not per pair. A pair whose outcomes are identical gets p = 1."""
    outcomes = np.asarray(outcomes, dtype=np.float64)
    n = outcomes.shape[0]
    differences = outcomes[:, first] - outcomes[:, second]
    observed = np.abs(differences.mean(axis=0))
    # Permuted sums are taken per model and subtracted, so a permutation that equals the observed signs differs from
    # the observed mean by rounding only; this margin, far above that rounding, keeps such ties counted.
    margin = 1e-9 * np.maximum(np.abs(differences).max(axis=0, initial=0.0), np.finfo(float).tiny)
    reached = np.zeros(len(observed), dtype=np.int64)
    rng = np.random.default_rng(seed)
    for rows in _row_blocks(n, n_permutations):
        signs = rng.integers(0, 2, size=(rows, n)).astype(np.float64) * 2 - 1
        sums = signs @ outcomes
        reached += (np.abs(sums[:, first] - sums[:, second]) / n >= observed - margin).sum(axis=0)
    return (1 + reached) / (1 + n_permutations)


def mcnemar_p_value(first_only_correct: int, second_only_correct: int) -> float:
    """McNemar's exact test: the two-sided binomial test of the discordant images against an even split; with no
    discordant image, the two classifiers cannot be told apart (p = 1)."""
    discordant = first_only_correct + second_only_correct
    if discordant == 0:
        return 1.0
    return float(binomtest(first_only_correct, discordant, 0.5).pvalue)


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment for a family of tests: the i-th smallest p is multiplied by (m - i + 1), made
    non-decreasing in that order, and capped at 1. Rejecting where the adjusted p < alpha controls the family-wise
    error rate at alpha."""
    p_values = np.asarray(p_values, dtype=np.float64)
    m = len(p_values)
    order = np.argsort(p_values, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p_values[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


@dataclass(frozen=True)
class ClassDiagnostics:
    """Per-class figures of one classifier; entries are NaN where undefined (recall of a class with no image,
    precision of a class never predicted)."""

    support: np.ndarray
    recall: Intervals
    precision: np.ndarray
    confusion: np.ndarray  # rows: true class, columns: predicted class


def _nan_percentiles(estimates: np.ndarray, quantiles: list[float]) -> list[np.ndarray]:
    """Per column, the quantiles of its non-NaN entries by linear interpolation (as `np.percentile`), NaN for a column
    with none. `np.nanpercentile` gives the same but loops in Python over columns."""
    ordered = np.sort(estimates, axis=0)  # NaN sort last
    valid = (~np.isnan(estimates)).sum(axis=0)
    columns = np.arange(estimates.shape[1])
    found = []
    for quantile in quantiles:
        position = quantile * np.maximum(valid - 1, 0)
        below = np.floor(position).astype(np.int64)
        above = np.minimum(below + 1, np.maximum(valid - 1, 0))
        low_value, high_value = ordered[below, columns], ordered[above, columns]
        value = low_value + (high_value - low_value) * (position - below)
        found.append(np.where(valid > 0, value, np.nan))
    return found


def class_diagnostics(
    labels: np.ndarray,
    predictions: np.ndarray,
    num_classes: int,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
) -> list[ClassDiagnostics]:
    """For each column of the (n, m) `predictions` (one classifier each, on the same labelled images): recall of each
    class with its bootstrap interval (over the resamples in which the class occurs), precision, support and the
    confusion matrix. All classifiers share the resamples, drawn once."""
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    n, m = predictions.shape
    indicator = _class_indicator(labels, num_classes)
    # per classifier: (n, classes) indicator of "this image is of the class and was predicted right"
    correct_indicators = [indicator.multiply((labels == predictions[:, j])[:, None]).tocsc() for j in range(m)]
    estimates = [[] for _ in range(m)]
    for indices in resample_indices(n, n_resamples, seed):
        counts_t = np.ascontiguousarray(_counts(indices, n).T)  # sparse products would copy a view each time
        support = (indicator.T @ counts_t).T
        for j, correct_indicator in enumerate(correct_indicators):
            estimates[j].append(_class_recalls((correct_indicator.T @ counts_t).T, support))
    tail = (1 - confidence) / 2
    found = []
    for j in range(m):
        confusion = np.bincount(labels * num_classes + predictions[:, j], minlength=num_classes**2).reshape(
            num_classes, num_classes
        )
        support, predicted, hits = confusion.sum(axis=1), confusion.sum(axis=0), np.diag(confusion).astype(np.float64)
        low, high = _nan_percentiles(np.concatenate(estimates[j]), [tail, 1 - tail])
        found.append(
            ClassDiagnostics(
                support=support,
                recall=Intervals(value=_class_recalls(hits, support), low=low, high=high),
                precision=_class_recalls(hits, predicted),  # hits over predictions: NaN for a class never predicted
                confusion=confusion,
            )
        )
    return found
