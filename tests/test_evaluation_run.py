"""Orchestration over cached embeddings, the CSV report and the score chart."""

import csv

import numpy as np
import pytest

from tti_eval.common.base import EmbeddingDefinition, Embeddings, Split
from tti_eval.common.cache import load_embeddings, save_embeddings
from tti_eval.evaluation import EVALUATORS, I2IRetrievalEvaluator, WeightedKNNClassifier, ZeroShotClassifier
from tti_eval.evaluation.evaluator import evaluate_embeddings, run_evaluation
from tti_eval.evaluation.metrics import EvaluationResult, Score
from tti_eval.evaluation.report import COLUMNS, evaluation_csv_path, write_csv
from tti_eval.plotting.scores import plot_scores


def synthetic(seed: int, n: int, dim: int = 12, with_classes: bool = True) -> Embeddings:
    """Seven classes, of which only the first five have images."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(7, dim))
    labels = rng.integers(0, 5, n)
    return Embeddings(
        images=(centres[labels] + 1.5 * rng.normal(size=(n, dim))).astype(np.float32),
        labels=labels,
        classes=(centres + 0.5 * rng.normal(size=centres.shape)).astype(np.float32) if with_classes else None,
    )


def cache_pair(definition: EmbeddingDefinition, seed: int, splits=(Split.TRAIN, Split.VALIDATION), **kwargs) -> None:
    metadata = {"class_names": [f"class {i}" for i in range(7)]}
    for offset, split in enumerate(splits):
        save_embeddings(
            definition, synthetic(seed + offset, 90 if split == Split.TRAIN else 40, **kwargs), split, metadata
        )


@pytest.fixture
def cached(cache_path):
    good = EmbeddingDefinition(model="clip", dataset="shapes")
    textless = EmbeddingDefinition(model="dino", dataset="shapes")
    missing = EmbeddingDefinition(model="clip", dataset="plants")
    cache_pair(good, seed=1)
    cache_pair(textless, seed=3, with_classes=False)
    cache_pair(missing, seed=5, splits=(Split.TRAIN,))
    return good, textless, missing


def test_run_evaluation_scores_every_pair_and_explains_the_rest(cached):
    good, textless, missing = cached
    calls = []
    run = run_evaluation(list(EVALUATORS.values()), [good, missing, textless], progress=lambda *a: calls.append(a))

    found = {(r.model, r.dataset, r.evaluator) for r in run.results}
    assert found == {("clip", "shapes", e) for e in EVALUATORS} | {
        ("dino", "shapes", e) for e in ("linear_probe", "wKNN", "I2IR")
    }
    assert len(run.problems) == 2
    assert "tti-eval build --model-dataset clip/plants" in run.problems[0]
    assert run.problems[1] == "zero_shot skipped for dino/shapes: its train embeddings have no class embeddings."
    assert calls[-1] == (12, 12, "done") and [c[0] for c in calls] == sorted(c[0] for c in calls)

    # The numbers are those of the evaluators run directly, with num_classes from the cached class names.
    train, val = load_embeddings(good, Split.TRAIN), load_embeddings(good, Split.VALIDATION)
    by_title = {r.evaluator: r for r in run.results if r.model == "clip"}
    for title, evaluator in EVALUATORS.items():
        direct = evaluator(train, val, num_classes=7)
        assert by_title[title].score.value == direct.evaluate()
        assert by_title[title].metrics == direct.scores()


def test_invalid_embeddings_are_one_problem_for_the_pair():
    train, val = synthetic(1, 50), synthetic(2, 20)
    val.images[3] = 0
    run = evaluate_embeddings(train, val, list(EVALUATORS.values()), model="m", dataset="d")
    assert run.results == []
    assert run.problems == [
        "m/d was not evaluated: the validation images contain all-zero vectors, which have no direction; "
        "rebuild the embeddings."
    ]


def test_shared_neighbours_are_sized_for_every_evaluator():
    train, val = synthetic(1, 60), synthetic(2, 30)
    params = {"wKNN": {"k": 3}, "I2IR": {"k": 7}}
    together = evaluate_embeddings(train, val, [WeightedKNNClassifier, I2IRetrievalEvaluator], params=params)
    assert together.results[0].metrics == WeightedKNNClassifier(train, val, k=3).scores()
    assert together.results[1].metrics == I2IRetrievalEvaluator(train, val, k=7).scores()


def results() -> list[EvaluationResult]:
    def score(value: float) -> Score:
        return Score(value, value - 0.05, min(1.0, value + 0.04))

    rows = []
    for model, base in (("clip", 0.8), ("siglip", 0.7), ("openclip-b32", 0.6)):
        for dataset, shift in (("plants", 0.0), ("rsicd", -0.2), ("skin-cancer", 0.1)):
            metrics = {"accuracy": score(base + shift), "mean_per_class_recall": score(base + shift - 0.1)}
            rows.append(EvaluationResult(model, dataset, "wKNN", metrics | {"top5_accuracy": score(0.95)}))
            rows.append(EvaluationResult(model, dataset, "I2IR", {"accuracy": score(base + shift - 0.3)}))
    rows.append(EvaluationResult("clip", "plants", "linear_probe", {"accuracy": score(0.9)}, note="C = 10, chosen."))
    return rows


def test_csv_has_the_original_columns_first_then_metrics_and_intervals(output_path):
    path = write_csv(results(), evaluation_csv_path())
    assert path.parent == output_path / "evaluations" and path.name.startswith("eval_") and ":" not in path.name
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:4] == ["Model", "Dataset", "Classifier", "Accuracy"] and rows[0] == COLUMNS
    assert rows[0][4:7] == ["Accuracy low", "Accuracy high", "Top-5 accuracy"] and rows[0][-1] == "Note"
    first = dict(zip(rows[0], rows[1], strict=True))
    assert (first["Model"], first["Dataset"], first["Classifier"], float(first["Accuracy"])) == (
        "clip",
        "plants",
        "wKNN",
        0.8,
    )
    assert float(first["Accuracy low"]) == pytest.approx(0.75) and float(first["Top-5 accuracy"]) == 0.95
    retrieval = dict(zip(rows[0], rows[2], strict=True))
    assert retrieval["Top-5 accuracy"] == "" and retrieval["Mean per-class recall high"] == ""
    assert rows[-1][-1] == "C = 10, chosen." and len(rows) == 1 + len(results())


def test_plot_scores_writes_a_png(tmp_path):
    path = plot_scores(results(), "wKNN", tmp_path / "plots" / "wKNN.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    with pytest.raises(ValueError, match="no zero_shot results"):
        plot_scores(results(), ZeroShotClassifier.title(), tmp_path / "zero.png")
