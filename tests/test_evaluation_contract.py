"""Contract tests over whatever evaluators are registered, plus a toy one that this module declares and registers.

Every number a user reads (the result's metrics, the CSV cells, the terminal table, the chart's bars and error bars)
is checked against a reference computed here from the evaluator's stored per-item outcomes with plain loops, so a
metric, an interval or a presentation that shows the wrong number fails. No test here names the built-in evaluators:
a new one is covered the moment it registers.
"""

import csv
import dataclasses
import io
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import numpy as np
import pytest
from matplotlib.collections import LineCollection
from matplotlib.container import BarContainer, ErrorbarContainer
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from tti_eval.common.base import Embeddings
from tti_eval.common.title_registry import DuplicateTitleError
from tti_eval.evaluation import (
    EVALUATORS,
    ClassificationModel,
    EvaluationResult,
    EvaluatorSpec,
    InvalidParametersError,
    get_evaluator,
    register_evaluator,
)
from tti_eval.evaluation._metrics import ACCURACY, CLASSIFICATION_METRICS, MEAN_PER_CLASS_RECALL
from tti_eval.evaluation.report import csv_columns, metric_column, write_csv
from tti_eval.evaluation.run import evaluate_embeddings
from tti_eval.evaluation.utils import normalize, softmax

N_RESAMPLES = 200
SEED = 3


# ---------------------------------------------------------------- a toy evaluator: this class is all it takes


class CentroidParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(0.1, gt=0)


class NearestCentroidClassifier(ClassificationModel):
    """Each validation image goes to the class whose mean train image is most similar (cosine)."""

    spec = EvaluatorSpec(
        title="toy_centroid",
        description="nearest class centroid of the train images",
        main_metric=MEAN_PER_CLASS_RECALL,  # not the first metric, so nothing may assume the main one comes first
        metrics=CLASSIFICATION_METRICS,
        params=CentroidParams,
    )

    def _predict(self) -> tuple[np.ndarray, np.ndarray]:
        train = normalize(self._train.images)
        centroids = np.zeros((self.num_classes, train.shape[1]), dtype=np.float64)
        np.add.at(centroids, self._train.labels, train)
        centroids[~centroids.any(axis=1)] = 1.0  # a class absent from train gets an arbitrary but finite centroid
        logits = normalize(self._val.images) @ normalize(centroids).T / self.params.temperature
        probabilities = softmax(logits)
        return probabilities, probabilities.argmax(axis=1)


@pytest.fixture
def toy() -> Iterator[type[NearestCentroidClassifier]]:
    register_evaluator(NearestCentroidClassifier)
    yield NearestCentroidClassifier
    EVALUATORS.unregister(NearestCentroidClassifier.spec.title)


TITLES = [*EVALUATORS, NearestCentroidClassifier.spec.title]


@pytest.fixture(params=TITLES)
def evaluator(request) -> Iterator[type]:
    """Every registered evaluator, and the toy one registered for the test."""
    if request.param == NearestCentroidClassifier.spec.title:
        yield request.getfixturevalue("toy")
    else:
        yield get_evaluator(request.param)


# ---------------------------------------------------------------- data and references


def synthetic(seed: int, n: int, num_classes: int = 7, dim: int = 12) -> Embeddings:
    """Noisy clusters (one class left out of every split, so num_classes exceeds the labels seen)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(num_classes, dim))
    labels = rng.integers(0, num_classes - 1, n)
    return Embeddings(
        images=(centres[labels] + 1.6 * rng.normal(size=(n, dim))).astype(np.float32),
        labels=labels,
        classes=(centres + 0.5 * rng.normal(size=centres.shape)).astype(np.float32),
    )


def reference_interval(per_sample, n: int) -> tuple[float, float]:
    """The seeded percentile bootstrap written out: resample n items with replacement, recompute, take 2.5 / 97.5."""
    rng = np.random.default_rng(SEED)
    estimates = []
    for _ in range(N_RESAMPLES):
        chosen = rng.integers(0, n, size=n)
        estimates.append(per_sample(chosen))
    low, high = np.percentile(estimates, [2.5, 97.5])
    return float(low), float(high)


def reference_recall(labels: np.ndarray, predictions: np.ndarray) -> float:
    recalls = []
    for c in sorted(set(labels.tolist())):
        members = [i for i in range(len(labels)) if labels[i] == c]
        recalls.append(sum(predictions[i] == c for i in members) / len(members))
    return float(np.mean(recalls))


def reference_metrics(result: EvaluationResult) -> dict[str, tuple[float, float, float]]:
    """(value, low, high) of every metric, recomputed from the result's outcome arrays."""
    if result.predictions is not None:
        y, p = result.labels, result.predictions
        items = {"accuracy": (p == y).astype(float)}
        if result.top5_hits is not None:
            items["top5_accuracy"] = result.top5_hits.astype(float)
        expected = {
            name: (x.mean(), *reference_interval(lambda i, x=x: x[i].mean(), len(x))) for name, x in items.items()
        }
        recall_interval = reference_interval(lambda i: reference_recall(y[i], p[i]), len(y))
        expected["mean_per_class_recall"] = (reference_recall(y, p), *recall_interval)
        return expected
    scores = result.per_query_scores
    interval = reference_interval(lambda i: scores[i].mean(), len(scores))
    return {result.main_metric.name: (float(np.mean(scores)), *interval)}


def run_one(evaluator: type, model: str = "m", dataset: str = "d", seed: int = 1) -> EvaluationResult:
    run = evaluate_embeddings(
        synthetic(seed, 120),
        synthetic(seed + 50, 70),
        [evaluator],
        num_classes=7,
        model=model,
        dataset=dataset,
        n_resamples=N_RESAMPLES,
        seed=SEED,
    )
    assert not run.problems, run.problems
    (result,) = run.results
    return result


# ---------------------------------------------------------------- the declaration


def test_declaration_drives_title_defaults_and_parameter_checks(evaluator):
    spec = evaluator.spec
    assert evaluator.title() == spec.title and get_evaluator(spec.title.upper()) is evaluator
    assert spec.main_metric in spec.metrics
    assert evaluator.get_default_params() == spec.params().model_dump()
    with pytest.raises(InvalidParametersError, match=f"{spec.title} parameter 'no_such_parameter'"):
        evaluator(synthetic(1, 30), synthetic(2, 20), no_such_parameter=1)


def test_declared_metrics_are_reported_and_match_a_reference(evaluator):
    result = run_one(evaluator)
    assert result.evaluator == evaluator.spec.title and result.main_metric == evaluator.spec.main_metric
    assert set(result.metrics) <= {m.name for m in evaluator.spec.metrics}
    assert result.score == result.metrics[evaluator.spec.main_metric.name]
    direct = evaluator(synthetic(1, 120), synthetic(51, 70), num_classes=7)
    assert direct.evaluate() == pytest.approx(result.score.value, abs=1e-12)  # evaluate() is the main metric
    expected = reference_metrics(result)
    assert set(result.metrics) == set(expected)
    for name, (value, low, high) in expected.items():
        score = result.metrics[name]
        assert score.value == pytest.approx(value, abs=1e-12), name
        assert (score.low, score.high) == pytest.approx((low, high), abs=1e-12), name
        assert score.low <= score.value <= score.high


def test_outcomes_are_plain_arrays_of_the_scored_items(evaluator):
    result = run_one(evaluator)
    arrays = {f.name: getattr(result, f.name) for f in fields(result) if not f.compare}
    given = {name: array for name, array in arrays.items() if array is not None}
    assert given and all(isinstance(a, np.ndarray) and len(a) == len(result.labels) for a in given.values())
    assert (result.predictions is None) != (result.per_query_scores is None)  # a classifier or a retrieval
    if result.predictions is not None:
        direct = evaluator(synthetic(1, 120), synthetic(51, 70), num_classes=7)
        probabilities, predicted = direct.predict()
        np.testing.assert_array_equal(result.predictions, predicted)
        np.testing.assert_array_equal(result.labels, synthetic(51, 70).labels)
        top5 = [y in np.argsort(-row, kind="stable")[:5] for row, y in zip(probabilities, result.labels, strict=True)]
        np.testing.assert_array_equal(result.top5_hits, top5)


def test_an_evaluator_is_run_with_its_parameters(evaluator):
    """A parameter given by title (any case) reaches the evaluator; defaults fill the rest."""
    spec = evaluator.spec
    numeric = [name for name, f in spec.params.model_fields.items() if f.annotation in (int, float)]
    if not numeric:
        pytest.skip(f"{spec.title} has no numeric parameter")
    name = numeric[0]
    changed = {name: spec.params.model_fields[name].default * 2}
    run = evaluate_embeddings(
        synthetic(1, 120), synthetic(51, 70), [evaluator], num_classes=7, params={spec.title.lower(): changed}
    )
    direct = evaluator(synthetic(1, 120), synthetic(51, 70), num_classes=7, **changed)
    assert run.results[0].metrics == direct.scores()


# ---------------------------------------------------------------- what the user reads: CSV, table, chart


def grid_of_results(evaluator: type) -> list[EvaluationResult]:
    return [
        run_one(evaluator, model, dataset, seed)
        for seed, (model, dataset) in enumerate(
            [("alpha", "one"), ("beta", "one"), ("alpha", "two"), ("beta", "two")], start=1
        )
    ]


def test_csv_shows_each_result(evaluator, tmp_path):
    results = grid_of_results(evaluator)
    with write_csv(results, tmp_path / "eval.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == csv_columns() and len(set(rows[0])) == len(rows[0])
    assert rows[0][:4] == ["Model", "Dataset", "Classifier", "Accuracy"]
    assert rows[0][4:6] == ["Accuracy low", "Accuracy high"] and rows[0][-2:] == ["Metric", "Note"]
    for result, row in zip(results, rows[1:], strict=True):
        cells = dict(zip(rows[0], row, strict=True))
        assert (cells["Model"], cells["Dataset"], cells["Classifier"]) == (
            result.model,
            result.dataset,
            evaluator.spec.title,
        )
        main = result.score
        assert [float(cells[c]) for c in ("Accuracy", "Accuracy low", "Accuracy high")] == [
            main.value,
            main.low,
            main.high,
        ]
        assert cells["Metric"] == evaluator.spec.main_metric.label
        for metric in evaluator.spec.metrics:
            if metric != evaluator.spec.main_metric and metric.name in result.metrics:
                score = result.metrics[metric.name]
                got = [float(cells[f"{metric_column(metric)}{end}"]) for end in ("", " low", " high")]
                assert got == [score.value, score.low, score.high], metric.name


def test_table_shows_each_score_with_its_interval(evaluator):
    from tti_eval.cli.main import scores_table

    results = grid_of_results(evaluator)
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(scores_table(evaluator.spec.title, results))
    lines = console.file.getvalue().splitlines()
    assert evaluator.spec.main_metric.label in lines[0]
    header = next(line for line in lines if line.startswith("┃"))  # dataset names; their image counts below
    datasets = [name.strip() for name in header.strip().strip("┃").split("┃")][1:]
    for model in ("alpha", "beta"):
        (line,) = [line for line in lines if line.strip("│ ").startswith(model)]
        cells = [c.strip() for c in line.strip().strip("│").split("│")][1:]
        for dataset, cell in zip(datasets, cells, strict=True):
            (score,) = [r.score for r in results if (r.model, r.dataset) == (model, dataset)]
            assert cell == f"{score.value:.4f} ({score.low:.3f}–{score.high:.3f})"


def test_chart_bars_and_error_bars_show_each_score(evaluator):
    from tti_eval.plotting.scores import scores_figure

    results = grid_of_results(evaluator)
    axes = scores_figure(results, evaluator.spec.title).axes[0]
    assert axes.get_ylabel() == evaluator.spec.main_metric.label
    datasets = [tick.get_text().split("\n")[0] for tick in axes.get_xticklabels()]  # the image count is under it
    bars = [c for c in axes.containers if isinstance(c, BarContainer)]
    error_bars = [c for c in axes.containers if isinstance(c, ErrorbarContainer)]
    models = [text.get_text() for text in axes.get_legend().get_texts()]
    assert models == ["alpha", "beta"] and len(bars) == len(error_bars) == 2
    for model, bar_container, error_container in zip(models, bars, error_bars, strict=True):
        (vertical,) = [c for c in error_container.lines[2] if isinstance(c, LineCollection)]
        for dataset, bar, segment in zip(datasets, bar_container, vertical.get_segments(), strict=True):
            (score,) = [r.score for r in results if (r.model, r.dataset) == (model, dataset)]
            assert bar.get_height() == pytest.approx(score.value, abs=1e-12)
            assert sorted(segment[:, 1]) == pytest.approx([score.low, score.high], abs=1e-12)
            assert bar.get_x() + bar.get_width() / 2 == pytest.approx(segment[0, 0])


def test_chart_names_the_metric_the_split_and_the_images_scored(evaluator):
    from tti_eval.plotting.scores import scores_figure

    results = [dataclasses.replace(r, split="test") for r in grid_of_results(evaluator)]
    results[1] = dataclasses.replace(results[1], n_scored=results[1].n_scored - 1)  # beta scored one image fewer
    axes = scores_figure(results, evaluator.spec.title).axes[0]
    label = evaluator.spec.main_metric.label
    assert axes.get_title().startswith(f"{evaluator.spec.title}: {label} on the test split\n")
    one = [r.n_scored for r in results if r.dataset == "one"]
    two = {r.n_scored for r in results if r.dataset == "two"}
    assert len(set(one)) == 2 and len(two) == 1
    assert [tick.get_text() for tick in axes.get_xticklabels()] == [
        f"one\n{one[0]} or {one[1]} images",
        f"two\n{two.pop()} images",
    ]


# ---------------------------------------------------------------- registering


def test_a_duplicate_title_names_both_places(toy):
    class Impostor(NearestCentroidClassifier):
        spec = EvaluatorSpec(
            title=NearestCentroidClassifier.spec.title.upper(),
            description="the same title in other letters",
            main_metric=ACCURACY,
            metrics=CLASSIFICATION_METRICS,
        )

    with pytest.raises(DuplicateTitleError) as error:
        register_evaluator(Impostor)
    message = str(error.value)
    assert "NearestCentroidClassifier" in message and "Impostor" in message and __file__ in message


def test_a_registered_evaluator_runs_with_the_others(toy):
    run = evaluate_embeddings(synthetic(1, 120), synthetic(51, 70), list(EVALUATORS.values()), num_classes=7)
    assert [r.evaluator for r in run.results] == list(EVALUATORS)
    assert run.results[-1].evaluator == toy.spec.title and not run.problems


def test_a_parameter_error_names_the_parameter_and_the_known_ones():
    params: dict[str, Any] = {}
    for title, evaluator in EVALUATORS.items():
        fields_ = evaluator.spec.params.model_fields
        if fields_:
            name = next(iter(fields_))
            params = {title: {name: "not a value"}}
            break
    if not params:
        pytest.skip("no registered evaluator has parameters")
    (title,) = params
    with pytest.raises(InvalidParametersError, match=f"{title} parameter '{name}'.*its parameters are"):
        evaluate_embeddings(synthetic(1, 30), synthetic(2, 20), [EVALUATORS[title]], params=params)
