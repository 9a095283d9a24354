"""Rank models on the same images and say which of them the data cannot tell from the best.

Per (dataset, evaluator, split), the models are ranked by the evaluator's main metric; each other model gets its
difference to the best with a paired bootstrap interval and a paired test (McNemar's exact test on 0/1 outcomes, a
sign-flip permutation test on per-query scores), Holm-adjusted over the comparisons of that group. Across datasets,
every pair of models is tested on each dataset (Holm over all pairs of that dataset) to count wins, ties and losses.
"""

import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import combinations
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy.stats import rankdata

from tti_eval.common.errors import TTIEvalError
from tti_eval.common.title_registry import natural_key
from tti_eval.evaluation import CONFIDENCE, N_RESAMPLES, SEED

if TYPE_CHECKING:
    from tti_eval.evaluation import EvaluationResult

from .results import (
    ClassResult,
    Comparison,
    ComparisonRun,
    GroupComparison,
    HeadToHead,
    Interval,
    Leaderboard,
    ModelResult,
    PerClassResult,
    Standing,
)
from .statistics import bootstrap_intervals, class_diagnostics, holm, mcnemar_p_value, sign_flip_p_values

ALPHA = 0.05


@dataclass(frozen=True)
class ModelOutcomes:
    """One model's per-image outcomes under one evaluator on one dataset split: what `compare_models` pairs.

    `kind` "correct": `outcomes` is 1 where the classifier was right, 0 where wrong (compared with McNemar's test);
    "scores": one score per query, e.g. I2IR's per-train-image precision (compared with a sign-flip test).
    `images_fingerprint` identifies the scored images (dataset, split rule, image identities) and is None when the
    cache does not say. `labels` and `predictions` (class indices per image) give the per-class figures."""

    model: str
    dataset: str
    evaluator: str
    split: str
    metric: str
    higher_is_better: bool
    kind: Literal["correct", "scores"]
    outcomes: np.ndarray
    images_fingerprint: str | None = None
    labels: np.ndarray | None = None
    predictions: np.ndarray | None = None
    class_names: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if self.kind == "correct" and not self.higher_is_better:
            raise ValueError("0/1 correctness is a score where higher is better")
        if (self.labels is None) != (self.predictions is None):
            raise ValueError("per-class figures need both labels and predictions")


def _check_pairable(group: list[ModelOutcomes]) -> None:
    """Refuse, in one sentence, models whose outcomes are not on the same images."""
    first = group[0]
    where = f"on {first.dataset} ({first.split} split, {first.evaluator})"
    seen = set()
    for other in group:
        if other.model in seen:
            raise TTIEvalError(f"Model '{other.model}' is given twice {where}; name each model once.")
        seen.add(other.model)
        if (other.metric, other.higher_is_better, other.kind) != (first.metric, first.higher_is_better, first.kind):
            raise ValueError(f"{first.evaluator} outcomes disagree on their metric {where}")
        pair = f"'{first.model}' and '{other.model}' cannot be paired {where}"
        if len(other.outcomes) != len(first.outcomes):
            raise TTIEvalError(
                f"{pair}: they scored {len(first.outcomes)} and {len(other.outcomes)} images; rebuild their "
                "embeddings with `tti-eval build` so that both cover the same images."
            )
        if (
            first.images_fingerprint
            and other.images_fingerprint
            and (first.images_fingerprint != other.images_fingerprint)
        ):
            raise TTIEvalError(
                f"{pair}: their caches were built from different images (fingerprints differ); rebuild the stale one "
                "with `tti-eval build --overwrite`."
            )
        if first.labels is not None and other.labels is not None and not np.array_equal(first.labels, other.labels):
            raise TTIEvalError(
                f"{pair}: their images carry different labels, so they are not the same images in the same order; "
                "rebuild their embeddings with `tti-eval build --overwrite`."
            )


def per_class_results(
    labels: np.ndarray,
    predictions: Sequence[np.ndarray],
    models: Sequence[str],
    class_names: Sequence[str] | None = None,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
) -> list[PerClassResult]:
    """Per-class recall (with interval), precision, support and confusion matrix of each model's `predictions` of
    the same labelled images, all on the same resamples. Without `class_names` classes are named by index."""
    labels = np.asarray(labels)
    num_classes = len(class_names) if class_names else 1 + max(int(max(labels.max(), p.max())) for p in predictions)
    names = list(class_names) if class_names else [str(c) for c in range(num_classes)]
    found = class_diagnostics(labels, np.stack(predictions, axis=1), num_classes, n_resamples, seed, confidence)

    def optional(value: float) -> float | None:
        return None if np.isnan(value) else float(value)

    return [
        PerClassResult(
            model=model,
            classes=[
                ClassResult(
                    name=names[c],
                    support=int(figures.support[c]),
                    recall=None
                    if np.isnan(figures.recall.value[c])
                    else Interval(
                        value=figures.recall.value[c], low=figures.recall.low[c], high=figures.recall.high[c]
                    ),
                    precision=optional(figures.precision[c]),
                )
                for c in range(num_classes)
            ],
            confusion_matrix=figures.confusion.tolist(),
        )
        for model, figures in zip(models, found, strict=True)
    ]


def _per_class(items: list[ModelOutcomes], n_resamples: int, seed: int, confidence: float) -> list[PerClassResult]:
    """Per-class figures of the models that carry predictions, all on the same resamples."""
    named = next((item.class_names for item in items if item.class_names), None)
    return per_class_results(
        items[0].labels,
        [item.predictions for item in items],
        [item.model for item in items],
        named,
        n_resamples,
        seed,
        confidence,
    )


@dataclass(frozen=True)
class _PairTests:
    """Every pair (i, j), i < j, of a group's models: raw p-values and, for 0/1 outcomes, the discordant counts; for
    scores, the number of sign-flip permutations drawn."""

    pairs: list[tuple[int, int]]
    p_values: np.ndarray
    only_first: np.ndarray | None = None
    only_second: np.ndarray | None = None
    permutations: int | None = None


def _pair_tests(matrix: np.ndarray, kind: str, alpha: float, n_resamples: int, seed: int) -> _PairTests:
    pairs = list(combinations(range(matrix.shape[1]), 2))
    if not pairs:
        return _PairTests(pairs, np.empty(0))
    first, second = (np.array(side) for side in zip(*pairs, strict=True))
    if kind == "correct":
        # [i, j] = images model i got right and model j got wrong, for every pair in one product
        only = (matrix.T @ (1 - matrix)).round().astype(np.int64)
        only_first, only_second = only[first, second], only[second, first]
        p_values = np.array([mcnemar_p_value(a, b) for a, b in zip(only_first, only_second, strict=True)])
        return _PairTests(pairs, p_values, only_first, only_second)
    # A permutation p is at least 1 / (permutations + 1); Holm multiplies the smallest by the number of pairs, so with
    # too few permutations no difference could ever be significant among many models.
    permutations = max(n_resamples, math.ceil(2 * len(pairs) / alpha))
    p_values = sign_flip_p_values(matrix, first, second, permutations, seed)
    return _PairTests(pairs, p_values, permutations=permutations)


def _compare_group(
    group: list[ModelOutcomes], alpha: float, n_resamples: int, seed: int, confidence: float
) -> tuple[GroupComparison, list[tuple[str, str, int]]]:
    """The group's ranked results and comparisons with its best, and the outcome (+1 win, 0 tie, -1 loss of the
    first model) of every pair of its models."""
    _check_pairable(group)
    head = group[0]
    sign = 1.0 if head.higher_is_better else -1.0
    matrix = np.stack([np.asarray(item.outcomes, dtype=np.float64) for item in group], axis=1)
    n, m = matrix.shape
    values = matrix.mean(axis=0)
    order = sorted(range(m), key=lambda j: (-sign * values[j], natural_key(group[j].model)))
    best, others = order[0], order[1:]
    ranks = rankdata(-sign * values, method="average")

    intervals = bootstrap_intervals(
        np.hstack([matrix, matrix[:, others] - matrix[:, [best]]]), None, n_resamples, seed, confidence
    )
    tests = _pair_tests(matrix, head.kind, alpha, n_resamples, seed)
    pair_index = {pair: k for k, pair in enumerate(tests.pairs)}

    def pair_of(j: int) -> tuple[int, bool]:
        """Index of the pair (best, j) and whether best is its first model."""
        return (pair_index[(best, j)], True) if best < j else (pair_index[(j, best)], False)

    located = [pair_of(j) for j in others]
    against_best = holm(np.array([tests.p_values[k] for k, _ in located]))
    comparisons = []
    for position, (j, (k, best_first)) in enumerate(zip(others, located, strict=True)):
        counts = {}
        if tests.only_first is not None:
            best_only, model_only = (
                (tests.only_first[k], tests.only_second[k])
                if best_first
                else (tests.only_second[k], tests.only_first[k])
            )
            counts = {"best_only_correct": int(best_only), "model_only_correct": int(model_only)}
        column = m + position
        comparisons.append(
            Comparison(
                model=group[j].model,
                best=group[best].model,
                difference=Interval(
                    value=intervals.value[column], low=intervals.low[column], high=intervals.high[column]
                ),
                p_value=float(tests.p_values[k]),
                p_adjusted=float(against_best[position]),
                tied_with_best=bool(against_best[position] >= alpha),
                n=n,
                **counts,
            )
        )

    all_pairs = holm(tests.p_values)
    outcomes = []
    for (i, j), p_adjusted in zip(tests.pairs, all_pairs, strict=True):
        verdict = 0 if p_adjusted >= alpha else int(np.sign(sign * (values[i] - values[j])))
        outcomes.append((group[i].model, group[j].model, verdict))

    results = [
        ModelResult(
            model=group[j].model,
            rank=float(ranks[j]),
            value=intervals.value[j],
            low=intervals.low[j],
            high=intervals.high[j],
        )
        for j in order
    ]
    labelled = [group[j] for j in order if group[j].labels is not None]
    per_class = _per_class(labelled, n_resamples, seed, confidence) if labelled else []
    comparison = GroupComparison(
        dataset=head.dataset,
        evaluator=head.evaluator,
        split=head.split,
        metric=head.metric,
        higher_is_better=head.higher_is_better,
        test="mcnemar" if head.kind == "correct" else "sign_flip",
        permutations=tests.permutations,
        n=n,
        results=results,
        comparisons=comparisons,
        per_class=per_class,
    )
    return comparison, outcomes


def _leaderboard(groups: list[GroupComparison], verdicts: list[tuple[str, str, int]]) -> Leaderboard:
    ranks = defaultdict(list)
    for group in groups:
        for result in group.results:
            ranks[result.model].append(result.rank)
    standings = sorted(
        (Standing(model=model, mean_rank=float(np.mean(found)), datasets=len(found)) for model, found in ranks.items()),
        key=lambda standing: (standing.mean_rank, natural_key(standing.model)),
    )
    tally = defaultdict(lambda: [0, 0, 0])  # (model, other) -> wins, ties, losses
    for first, second, verdict in verdicts:
        tally[(first, second)][1 - verdict] += 1
        tally[(second, first)][1 + verdict] += 1
    position = {standing.model: k for k, standing in enumerate(standings)}
    head_to_head = [
        HeadToHead(model=model, other=other, wins=wins, ties=ties, losses=losses)
        for (model, other), (wins, ties, losses) in sorted(
            tally.items(), key=lambda item: (position[item[0][0]], position[item[0][1]])
        )
    ]
    head = groups[0]
    return Leaderboard(
        evaluator=head.evaluator, split=head.split, metric=head.metric, standings=standings, head_to_head=head_to_head
    )


def compare_models(
    outcomes: Iterable[ModelOutcomes],
    alpha: float = ALPHA,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
    on_unpairable: Callable[[str], None] | None = None,
) -> ComparisonRun:
    """Compare the models of each (dataset, evaluator, split) in `outcomes`, and summarise each (evaluator, split)
    across datasets. A model is tied with the best when its Holm-adjusted p is at least `alpha`.

    A group whose models did not score the same images raises `TTIEvalError`, or, given `on_unpairable`, is left
    out and its sentence passed to it, so the other groups are still compared."""
    from tti_eval.provenance import run_versions  # here, not at import: it loads the model and dataset providers

    grouped: dict[tuple[str, str, str], list[ModelOutcomes]] = defaultdict(list)
    for item in outcomes:
        grouped[(item.dataset, item.evaluator, item.split)].append(item)
    keys = sorted(grouped, key=lambda key: (natural_key(key[1]), key[2], natural_key(key[0])))

    groups, by_board = [], defaultdict(lambda: ([], []))
    for key in keys:
        try:
            comparison, verdicts = _compare_group(grouped[key], alpha, n_resamples, seed, confidence)
        except TTIEvalError as error:
            if on_unpairable is None:
                raise
            on_unpairable(str(error))
            continue
        groups.append(comparison)
        board_groups, board_verdicts = by_board[(comparison.evaluator, comparison.split)]
        board_groups.append(comparison)
        board_verdicts.extend(verdicts)

    return ComparisonRun(
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        alpha=alpha,
        confidence=confidence,
        n_resamples=n_resamples,
        seed=seed,
        versions=run_versions(),
        groups=groups,
        leaderboards=[_leaderboard(board_groups, verdicts) for board_groups, verdicts in by_board.values()],
    )


# The parts of a split's stored fingerprint that say which images it holds (the others describe the model).
_IMAGE_PARTS = ("split", "image_files", "images")


def images_fingerprint(fingerprints: dict[str, dict[str, Any] | None]) -> str | None:
    """A digest of which images every split of a result holds, equal for two models embedding the same images;
    None when some split has no stored fingerprint (then only sizes and labels can be checked)."""
    if not fingerprints or any(stored is None for stored in fingerprints.values()):
        return None
    parts = {split: {key: stored.get(key) for key in _IMAGE_PARTS} for split, stored in fingerprints.items()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def result_outcomes(result: "EvaluationResult") -> ModelOutcomes:
    """The per-image outcomes of an evaluation result, for `compare_models`: a classifier's 0/1 correctness, or a
    retrieval evaluator's per-query scores, provided their mean is the result's main metric (what is ranked)."""
    if result.per_query_scores is not None:
        kind, outcomes = "scores", np.asarray(result.per_query_scores, dtype=np.float64)
    elif result.predictions is not None and result.labels is not None:
        kind, outcomes = "correct", (result.predictions == result.labels).astype(np.float64)
    else:
        outcomes = None
    if outcomes is None or not math.isclose(float(outcomes.mean()), result.score.value, abs_tol=1e-9):
        raise TTIEvalError(
            f"{result.evaluator}'s {result.main_metric.label} is not a mean over images, so it cannot be compared "
            "image by image; leave it out with -e."
        )
    return ModelOutcomes(
        model=result.model,
        dataset=result.dataset,
        evaluator=result.evaluator,
        split=result.split,
        metric=result.main_metric.label,
        higher_is_better=result.main_metric.higher_is_better,
        kind=kind,
        outcomes=outcomes,
        images_fingerprint=images_fingerprint(result.fingerprints),
        labels=result.labels if kind == "correct" else None,
        predictions=result.predictions if kind == "correct" else None,
        class_names=result.class_names,
    )


def compare_results(
    results: Iterable["EvaluationResult"],
    alpha: float = ALPHA,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
    on_problem: Callable[[str], None] | None = None,
) -> ComparisonRun:
    """`compare_models` on evaluation results (e.g. `run_evaluation(...).results`), from the per-image outcomes they
    keep: nothing is re-run. `tti-eval compare` and the notebooks call this.

    A result that cannot be compared image by image, or a group whose models did not score the same images, raises
    `TTIEvalError`; given `on_problem`, it is left out with its sentence passed to it (once per evaluator)."""
    outcomes, refused = [], set()
    for result in results:
        try:
            outcomes.append(result_outcomes(result))
        except TTIEvalError as error:
            if on_problem is None:
                raise
            if result.evaluator not in refused:
                refused.add(result.evaluator)
                on_problem(str(error))
    return compare_models(outcomes, alpha, n_resamples, seed, confidence, on_problem)
