"""Orchestration over cached embeddings, the CSV report and the score chart."""

import csv
import io

import numpy as np
import pytest
from PIL import Image

from tti_eval.common.base import EmbeddingDefinition, Embeddings, Split
from tti_eval.common.cache import load_embeddings, save_embeddings
from tti_eval.evaluation import (
    EVALUATORS,
    EvaluationResult,
    I2IRetrievalEvaluator,
    WeightedKNNClassifier,
    ZeroShotClassifier,
)
from tti_eval.evaluation.report import evaluation_csv_path, write_csv
from tti_eval.evaluation.run import evaluate_embeddings, run_evaluation
from tti_eval.plotting._png import CHART_DPI
from tti_eval.plotting.scores import plot_scores, scores_figure


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
    textual = [title for title, e in EVALUATORS.items() if e.spec.needs_class_embeddings]
    assert textual  # zero-shot at least, so the skip below is exercised
    assert found == {("clip", "shapes", e) for e in EVALUATORS} | {
        ("dino", "shapes", e) for e in EVALUATORS if e not in textual
    }
    assert len(run.problems) == 1 + len(textual)
    assert "tti-eval build --model-dataset clip/plants" in run.problems[0]
    assert run.problems[1:] == [
        f"{title} skipped for dino/shapes: its train embeddings have no class embeddings." for title in textual
    ]
    steps = 3 * len(EVALUATORS)
    assert calls[-1] == (steps, steps, "done") and [c[0] for c in calls] == sorted(c[0] for c in calls)

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


def test_csv_lands_in_the_output_folder_under_a_portable_name(output_path):
    (result,) = evaluate_embeddings(
        synthetic(1, 50), synthetic(2, 20), [WeightedKNNClassifier], model="clip", dataset="shapes", n_resamples=20
    ).results
    note = EvaluationResult(**{**vars(result), "note": "C = 10, chosen."})
    path = write_csv([result, note], evaluation_csv_path())
    assert path.parent == output_path / "evaluations" and path.name.startswith("eval_") and ":" not in path.name
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0]["Note"] == "" and rows[1]["Note"] == "C = 10, chosen."


def test_plot_scores_writes_a_png(tmp_path):
    results = evaluate_embeddings(
        synthetic(1, 50), synthetic(2, 20), [WeightedKNNClassifier], model="clip", dataset="shapes", n_resamples=20
    ).results
    path = plot_scores(results, WeightedKNNClassifier.title(), tmp_path / "plots" / "wKNN.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    # saved as a palette PNG that looks like the figure matplotlib draws, in fewer bytes than its own RGBA file
    figure, rendered = scores_figure(results, WeightedKNNClassifier.title()), io.BytesIO()
    figure.savefig(rendered, format="png", dpi=CHART_DPI)
    with Image.open(path) as saved, Image.open(rendered) as direct:
        assert saved.mode == "P" and saved.size == direct.size
        difference = np.abs(np.asarray(saved.convert("RGB"), int) - np.asarray(direct.convert("RGB"), int))
    assert difference.mean() < 0.5 and np.quantile(difference, 0.999) <= 16
    assert path.stat().st_size < len(rendered.getvalue()) / 2
    with pytest.raises(ValueError, match="no zero_shot results"):
        plot_scores(results, ZeroShotClassifier.title(), tmp_path / "zero.png")
