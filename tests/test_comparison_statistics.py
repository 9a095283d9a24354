"""The paired statistics against slow, obviously correct references: explicit loops over resamples, images and
classes, and binomial tails summed from math.comb."""

import math

import numpy as np
import pytest

from tti_eval.comparison import statistics
from tti_eval.comparison.statistics import (
    bootstrap_intervals,
    class_diagnostics,
    holm,
    mcnemar_p_value,
    sign_flip_p_values,
)
from tti_eval.evaluation._metrics import bootstrap


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default), written out."""
    ordered = sorted(values)
    position = q / 100 * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def reference_mean_per_class_recall(labels, correct, indices) -> float:
    hits, counts = {}, {}
    for i in indices:
        counts[labels[i]] = counts.get(labels[i], 0) + 1
        hits[labels[i]] = hits.get(labels[i], 0.0) + correct[i]
    return sum(hits[c] / counts[c] for c in counts) / len(counts)


def reference_paired_bootstrap(a, b, n_resamples, seed, labels=None):
    """The difference of statistic(a) and statistic(b), both on the same drawn images, resample by resample."""
    rng = np.random.default_rng(seed)
    n = len(a)

    def statistic(outcomes, indices):
        if labels is None:
            return sum(outcomes[i] for i in indices) / len(indices)
        return reference_mean_per_class_recall(labels, outcomes, indices)

    differences = []
    for _ in range(n_resamples):
        indices = [int(i) for i in rng.integers(0, n, size=n)]
        differences.append(statistic(a, indices) - statistic(b, indices))
    value = statistic(a, range(n)) - statistic(b, range(n))
    return value, percentile(differences, 2.5), percentile(differences, 97.5)


@pytest.fixture
def outcomes():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, size=57)
    a = (rng.random(57) < 0.8).astype(float)
    b = (rng.random(57) < 0.6).astype(float)
    return labels, a, b


def test_paired_bootstrap_of_means_matches_reference(outcomes):
    _, a, b = outcomes
    got = bootstrap_intervals((a - b)[:, None], n_resamples=300, seed=7)
    value, low, high = reference_paired_bootstrap(a, b, 300, 7)
    assert got.value[0] == pytest.approx(value)
    assert got.low[0] == pytest.approx(low)
    assert got.high[0] == pytest.approx(high)


def test_paired_bootstrap_of_mean_per_class_recall_matches_reference(outcomes):
    labels, a, b = outcomes
    got = bootstrap_intervals((a - b)[:, None], labels=labels, n_resamples=200, seed=1)
    value, low, high = reference_paired_bootstrap(a, b, 200, 1, labels=labels)
    assert (got.value[0], got.low[0], got.high[0]) == pytest.approx((value, low, high))


def test_bootstrap_over_several_blocks_and_columns(outcomes, monkeypatch):
    """Blocks of resamples are drawn one after another from one generator, so splitting changes nothing."""
    _, a, b = outcomes
    whole = bootstrap_intervals(np.stack([a, b, a - b], axis=1), n_resamples=100, seed=2)
    monkeypatch.setattr(statistics, "_BLOCK_ELEMENTS", 57 * 7)  # 7 resamples per block, the last one shorter
    split = bootstrap_intervals(np.stack([a, b, a - b], axis=1), n_resamples=100, seed=2)
    for field in ("value", "low", "high"):
        np.testing.assert_allclose(getattr(split, field), getattr(whole, field))
    value, low, high = reference_paired_bootstrap(a, b, 100, 2)
    assert (split.value[2], split.low[2], split.high[2]) == pytest.approx((value, low, high))


def test_single_model_interval_equals_evaluate_interval(outcomes):
    _, a, _ = outcomes
    got = bootstrap_intervals(a[:, None], n_resamples=250, seed=4)
    expected = bootstrap(lambda i: a[i].mean(), len(a), float(a.mean()), n_resamples=250, seed=4)
    assert (got.value[0], got.low[0], got.high[0]) == pytest.approx((expected.value, expected.low, expected.high))


def reference_mcnemar(first_only: int, second_only: int) -> float:
    n = first_only + second_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(first_only, second_only) + 1)) / 2**n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize("first_only, second_only", [(0, 0), (0, 1), (3, 3), (1, 9), (12, 4), (40, 61), (0, 25)])
def test_mcnemar_matches_binomial_tail_sums(first_only, second_only):
    assert mcnemar_p_value(first_only, second_only) == pytest.approx(reference_mcnemar(first_only, second_only))


def reference_holm(p_values: list[float]) -> list[float]:
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for step, i in enumerate(order):
        running = max(running, (m - step) * p_values[i])
        adjusted[i] = min(1.0, running)
    return adjusted


@pytest.mark.parametrize(
    "p_values",
    [[0.01], [0.01, 0.04, 0.03, 0.005], [0.5, 0.5, 0.001], [0.2, 0.01, 0.011, 0.9, 0.04], [0.3, 0.3, 0.3]],
)
def test_holm_matches_step_down_reference(p_values):
    np.testing.assert_allclose(holm(np.array(p_values)), reference_holm(p_values))


def test_holm_is_monotone_and_capped():
    p_values = np.random.default_rng(0).random(30) ** 3
    adjusted = holm(p_values)
    order = np.argsort(p_values)
    assert np.all(np.diff(adjusted[order]) >= 0)
    assert np.all(adjusted <= 1) and np.all(adjusted >= p_values)


def reference_sign_flip(differences, n_permutations, seed) -> float:
    rng = np.random.default_rng(seed)
    n = len(differences)
    observed = abs(sum(differences) / n)
    reached = 0
    for _ in range(n_permutations):
        signs = rng.integers(0, 2, size=n) * 2 - 1
        if abs(sum(s * d for s, d in zip(signs, differences, strict=True)) / n) >= observed - 1e-12:
            reached += 1
    return (1 + reached) / (1 + n_permutations)


def test_sign_flip_matches_reference_and_shares_signs_across_pairs(monkeypatch):
    rng = np.random.default_rng(5)
    outcomes = np.stack([rng.random(40), rng.random(40) * 0.9, rng.random(40)], axis=1)
    outcomes[:, 2] = outcomes[:, 0] + rng.normal(0.0, 0.05, 40)
    first, second = np.array([0, 0, 1, 2]), np.array([1, 2, 2, 2])  # the last pair is a model with itself
    monkeypatch.setattr(statistics, "_BLOCK_ELEMENTS", 40 * 30)
    got = sign_flip_p_values(outcomes, first, second, n_permutations=400, seed=9)
    expected = [
        reference_sign_flip(list(outcomes[:, i] - outcomes[:, j]), 400, 9) for i, j in zip(first, second, strict=True)
    ]
    np.testing.assert_allclose(got, expected)
    assert got[3] == 1.0


def test_sign_flip_finds_a_real_difference():
    rng = np.random.default_rng(6)
    outcomes = np.stack([rng.normal(0.6, 0.2, 500), rng.normal(0.5, 0.2, 500)], axis=1)
    assert sign_flip_p_values(outcomes, np.array([0]), np.array([1]), n_permutations=999)[0] == pytest.approx(1 / 1000)


def test_class_diagnostics_match_reference():
    rng = np.random.default_rng(8)
    num_classes = 5  # class 4 never occurs, class 3 is never predicted and missing from some resamples
    labels = rng.integers(0, 3, size=80)
    labels[[5, 40, 41]] = 3
    predictions = np.where(rng.random(80) < 0.7, labels, rng.integers(0, 3, size=80))
    predictions[labels == 3] = np.where(rng.random((labels == 3).sum()) < 0.5, 0, 1)
    shuffled = rng.permutation(predictions)
    got, other = class_diagnostics(labels, np.stack([predictions, shuffled], axis=1), num_classes, 150, seed=3)
    (alone,) = class_diagnostics(labels, shuffled[:, None], num_classes, 150, seed=3)
    np.testing.assert_array_equal(other.recall.low, alone.recall.low)  # each classifier as if alone

    confusion = [[0] * num_classes for _ in range(num_classes)]
    for y, p in zip(labels, predictions, strict=True):
        confusion[y][p] += 1
    np.testing.assert_array_equal(got.confusion, confusion)
    for c in range(num_classes):
        support = sum(1 for y in labels if y == c)
        predicted = sum(1 for p in predictions if p == c)
        right = sum(1 for y, p in zip(labels, predictions, strict=True) if y == p == c)
        assert got.support[c] == support
        assert (got.precision[c] == pytest.approx(right / predicted)) if predicted else np.isnan(got.precision[c])
        if support == 0:
            assert np.isnan(got.recall.value[c]) and np.isnan(got.recall.low[c]) and np.isnan(got.recall.high[c])
            continue
        assert got.recall.value[c] == pytest.approx(right / support)

    reference_rng = np.random.default_rng(3)
    per_class = {c: [] for c in range(num_classes)}
    for _ in range(150):
        drawn = reference_rng.integers(0, len(labels), size=len(labels))
        for c in range(num_classes):
            members = [i for i in drawn if labels[i] == c]
            if members:
                per_class[c].append(sum(1 for i in members if predictions[i] == c) / len(members))
    for c in range(4):
        assert (got.recall.low[c], got.recall.high[c]) == pytest.approx(
            (percentile(per_class[c], 2.5), percentile(per_class[c], 97.5))
        )
