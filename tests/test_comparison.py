"""compare_models: ranking, paired comparisons with the best, the cross-dataset summary, refusals to pair, and the
JSON/markdown files, checked against references written out here."""

import json
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from tests.test_comparison_statistics import (
    reference_holm,
    reference_mcnemar,
    reference_paired_bootstrap,
    reference_sign_flip,
)
from tti_eval.common.errors import TTIEvalError
from tti_eval.comparison import ComparisonRun, ModelOutcomes, compare_models, load_comparison, save_comparison
from tti_eval.comparison.writers import render_markdown
from tti_eval.schemas import render_schemas

SOURCES = Path(__file__).parents[1] / "sources"
N = 120


def correct(model: str, dataset: str, accuracy: float, seed: int, **extra) -> ModelOutcomes:
    rng = np.random.default_rng(seed)
    return ModelOutcomes(
        model=model,
        dataset=dataset,
        evaluator="wKNN",
        split="validation",
        metric="accuracy",
        higher_is_better=True,
        kind="correct",
        outcomes=(rng.random(N) < accuracy).astype(np.int8),
        **extra,
    )


def scores(model: str, values: np.ndarray, higher_is_better: bool = True) -> ModelOutcomes:
    return ModelOutcomes(
        model=model,
        dataset="plants",
        evaluator="I2IR",
        split="validation",
        metric="accuracy",
        higher_is_better=higher_is_better,
        kind="scores",
        outcomes=values,
    )


def test_group_ranks_models_and_compares_each_with_the_best():
    models = [
        correct("b-weak", "plants", 0.55, 1),
        correct("a-strong", "plants", 0.9, 2),
        correct("c", "plants", 0.85, 3),
    ]
    run = compare_models(models, n_resamples=200, seed=5)
    (group,) = run.groups
    outcomes = {item.model: item.outcomes.astype(float) for item in models}
    expected_order = sorted(outcomes, key=lambda model: -outcomes[model].mean())
    assert [r.model for r in group.results] == expected_order
    assert [r.rank for r in group.results] == [1.0, 2.0, 3.0]
    best = expected_order[0]
    assert all(c.best == best for c in group.comparisons)
    assert group.test == "mcnemar" and group.n == N

    raw = []
    for comparison in group.comparisons:
        model, reference = outcomes[comparison.model], outcomes[best]
        best_only = sum(1 for a, b in zip(reference, model, strict=True) if a == 1 and b == 0)
        model_only = sum(1 for a, b in zip(reference, model, strict=True) if a == 0 and b == 1)
        assert (comparison.best_only_correct, comparison.model_only_correct) == (best_only, model_only)
        assert comparison.p_value == pytest.approx(reference_mcnemar(best_only, model_only))
        value, low, high = reference_paired_bootstrap(model, reference, 200, 5)
        d = comparison.difference
        assert (d.value, d.low, d.high) == pytest.approx((value, low, high))
        raw.append(comparison.p_value)
    adjusted = reference_holm(raw)
    for comparison, expected in zip(group.comparisons, adjusted, strict=True):
        assert comparison.p_adjusted == pytest.approx(expected)
        assert comparison.tied_with_best == (expected >= 0.05)
    tied = {c.model: c.tied_with_best for c in group.comparisons}
    assert tied == {"c": True, "b-weak": False}  # 0.85 vs 0.9 on 120 images is noise; 0.55 is not


def test_results_carry_each_models_own_interval():
    model = correct("m", "plants", 0.7, 4)
    (result,) = compare_models([model], n_resamples=150, seed=2).groups[0].results
    ones = model.outcomes.astype(float)
    value, low, high = reference_paired_bootstrap(ones, np.zeros(N), 150, 2)
    assert (result.value, result.low, result.high) == pytest.approx((value, low, high))


def test_alpha_decides_the_tie():
    models = [correct("a", "plants", 0.9, 2), correct("b", "plants", 0.82, 9)]
    (comparison,) = compare_models(models, n_resamples=50).groups[0].comparisons
    assert 0.001 < comparison.p_adjusted < 0.5, "the data must be ambiguous enough for alpha to matter"
    assert compare_models(models, alpha=comparison.p_adjusted, n_resamples=50).groups[0].comparisons[0].tied_with_best
    loose = compare_models(models, alpha=comparison.p_adjusted * 1.01, n_resamples=50)
    assert not loose.groups[0].comparisons[0].tied_with_best


def test_scores_use_the_sign_flip_test_and_respect_direction():
    rng = np.random.default_rng(0)
    low_values, high_values = rng.random(80) * 0.5, rng.random(80) * 0.5 + 0.2
    run = compare_models([scores("low", low_values), scores("high", high_values)], n_resamples=300, seed=1)
    (group,) = run.groups
    assert group.test == "sign_flip" and [r.model for r in group.results] == ["high", "low"]
    (comparison,) = group.comparisons
    assert comparison.best_only_correct is None and comparison.model_only_correct is None
    assert comparison.p_value == pytest.approx(reference_sign_flip(list(low_values - high_values), 300, 1))

    flipped = compare_models([scores("low", low_values, False), scores("high", high_values, False)], n_resamples=50)
    assert [r.model for r in flipped.groups[0].results] == ["low", "high"]
    assert flipped.groups[0].comparisons[0].difference.value == pytest.approx(high_values.mean() - low_values.mean())


def test_enough_sign_flips_for_differences_to_survive_holm_among_many_models():
    """12 models make 66 pairs: 1,000 permutations could never give a Holm-adjusted p below 66 / 1001."""
    rng = np.random.default_rng(2)
    models = [scores(f"m{k:02d}", np.clip(rng.normal(0.3 + 0.05 * k, 0.1, 300), 0, 1)) for k in range(12)]
    run = compare_models(models, n_resamples=100)
    assert run.groups[0].permutations == math.ceil(2 * 66 / 0.05)
    best_record = next(h for h in run.leaderboards[0].head_to_head if h.model == "m11" and h.other == "m00")
    assert (best_record.wins, best_record.ties, best_record.losses) == (1, 0, 0)
    assert not any(c.tied_with_best for c in run.groups[0].comparisons if c.model < "m08")


def test_across_datasets_mean_rank_and_wins_ties_losses():
    accuracies = {"plants": (0.95, 0.6, 0.93), "skin": (0.7, 0.72, 0.3), "rocks": (0.5, 0.9, 0.52)}
    models = [
        correct(model, dataset, accuracy, seed=10 * d + m)
        for d, (dataset, row) in enumerate(accuracies.items())
        for m, (model, accuracy) in enumerate(zip(("a", "b", "c"), row, strict=True))
    ]
    run = compare_models(models, n_resamples=50)
    (board,) = run.leaderboards
    assert len(run.groups) == 3

    # Reference: ranks from the values, and every pair tested on each dataset, Holm over that dataset's three pairs.
    ranks = {"a": [], "b": [], "c": []}
    expected = {(x, y): [0, 0, 0] for x in ranks for y in ranks if x != y}
    for dataset in accuracies:
        outcome = {m.model: m.outcomes.astype(float) for m in models if m.dataset == dataset}
        for model, values in outcome.items():
            ranks[model].append(1 + sum(1 for other in outcome.values() if other.mean() > values.mean()))
        pairs = [("a", "b"), ("a", "c"), ("b", "c")]
        raw = []
        for x, y in pairs:
            only_x = sum(1 for p, q in zip(outcome[x], outcome[y], strict=True) if p == 1 and q == 0)
            only_y = sum(1 for p, q in zip(outcome[x], outcome[y], strict=True) if p == 0 and q == 1)
            raw.append(reference_mcnemar(only_x, only_y))
        for (x, y), p in zip(pairs, reference_holm(raw), strict=True):
            if p >= 0.05:
                expected[(x, y)][1] += 1
                expected[(y, x)][1] += 1
            else:
                winner, loser = (x, y) if outcome[x].mean() > outcome[y].mean() else (y, x)
                expected[(winner, loser)][0] += 1
                expected[(loser, winner)][2] += 1
    mean_ranks = {model: sum(found) / len(found) for model, found in ranks.items()}
    assert {s.model: s.mean_rank for s in board.standings} == pytest.approx(mean_ranks)
    assert [s.mean_rank for s in board.standings] == sorted(mean_ranks.values())
    assert {(h.model, h.other): [h.wins, h.ties, h.losses] for h in board.head_to_head} == expected
    assert any(wins for wins, _, _ in expected.values()) and any(ties for _, ties, _ in expected.values())


def test_per_class_figures_when_labels_and_predictions_are_given():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, N)
    predictions = np.where(rng.random(N) < 0.8, labels, (labels + 1) % 3)
    model = correct("m", "plants", 0.5, 1, labels=labels, predictions=predictions, class_names=("x", "y", "z"))
    model = ModelOutcomes(**{**model.__dict__, "outcomes": (labels == predictions).astype(np.int8)})
    (per_class,) = compare_models([model], n_resamples=40).groups[0].per_class
    assert [c.name for c in per_class.classes] == ["x", "y", "z"]
    for c, found in enumerate(per_class.classes):
        members = labels == c
        assert found.support == members.sum()
        assert found.recall.value == pytest.approx((predictions[members] == c).mean())
        assert found.recall.low <= found.recall.value <= found.recall.high
    assert np.array_equal(
        per_class.confusion_matrix, [[((labels == t) & (predictions == p)).sum() for p in range(3)] for t in range(3)]
    )


@pytest.mark.parametrize(
    "change, says",
    [
        ({"outcomes": np.ones(N - 1, dtype=np.int8)}, "scored 120 and 119 images"),
        ({"images_fingerprint": "other"}, "fingerprints differ"),
        ({"labels": np.ones(N, dtype=int), "predictions": np.ones(N, dtype=int)}, "different labels"),
        ({"model": "a"}, "given twice"),
    ],
)
def test_outcomes_on_different_images_are_refused_in_one_sentence(change, says):
    labels = np.zeros(N, dtype=int)
    first = correct("a", "plants", 0.8, 1, images_fingerprint="f", labels=labels, predictions=labels)
    second = correct("b", "plants", 0.8, 2, images_fingerprint="f", labels=labels, predictions=labels)
    second = ModelOutcomes(**{**second.__dict__, **change})
    with pytest.raises(TTIEvalError, match=says) as raised:
        compare_models([first, second])
    message = str(raised.value)
    assert message.count(". ") == 0 and message.endswith(".")


def test_unknown_provenance_still_pairs():
    first = correct("a", "plants", 0.8, 1, images_fingerprint=None)
    second = correct("b", "plants", 0.8, 2, images_fingerprint="f")
    assert len(compare_models([first, second], n_resamples=20).groups[0].comparisons) == 1


def sample_run() -> ComparisonRun:
    models = [correct(m, d, a, s) for m, d, a, s in [("a", "plants", 0.9, 1), ("b", "plants", 0.8, 2)]]
    models += [correct(m, "skin", a, s) for m, a, s in [("a", 0.6, 3), ("b", 0.9, 4)]]
    return compare_models(models, n_resamples=50)


def test_saved_json_and_markdown(tmp_path):
    run = sample_run()
    json_path, markdown_path = save_comparison(run, tmp_path, now=datetime(2026, 1, 2, 3, 4, 5))
    assert json_path.name == "compare_2026-01-02_03-04-05.json" and markdown_path.suffix == ".md"
    assert load_comparison(json_path) == run
    saved = json.loads(json_path.read_text())
    comparison = saved["groups"][0]["comparisons"][0]
    assert set(comparison) >= {"model", "best", "difference", "p_value", "p_adjusted", "tied_with_best", "n"}
    assert set(comparison["difference"]) == {"value", "low", "high"}

    markdown = markdown_path.read_text()
    assert markdown == render_markdown(run)
    tables = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len({line.count("|") for line in tables[:4]}) == 1, "header, rule and rows have the same columns"
    assert "## plants · wKNN · validation" in markdown and "## Across datasets · wKNN · validation" in markdown
    for result in run.groups[0].results:
        assert f"{result.value:.4f} [{result.low:.4f}, {result.high:.4f}]" in markdown


def test_loading_something_else_says_what_to_give(tmp_path):
    wrong = tmp_path / "eval.json"
    wrong.write_text('{"groups": 3}')
    with pytest.raises(TTIEvalError, match="is not a saved comparison"):
        load_comparison(wrong)
    with pytest.raises(TTIEvalError, match="Cannot read"):
        load_comparison(tmp_path / "missing.json")


def test_compare_schema_is_generated_and_up_to_date():
    text = render_schemas()["compare-schema.json"]
    assert (SOURCES / "compare-schema.json").read_text() == text, "run `python -m tti_eval.schemas`"
    schema = json.loads(text)
    assert "comparisons" in schema["$defs"]["GroupComparison"]["properties"]
