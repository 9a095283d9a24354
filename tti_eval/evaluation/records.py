"""`eval_<timestamp>.json`: every result of an evaluation as validated data that describes itself.

Beside each metric and its interval a record keeps what the numbers were computed from (parameters with their
defaults, what the evaluator chose, sizes, class names, seed, resamples, each split's cache fingerprint, library
versions, an approximate-search mark) and the per-image outcomes, so that `tti-eval report` can compare the models
of a saved evaluation without the cache. Its schema (`sources/evaluation-schema.json`) is generated from these
models by `python -m tti_eval.schemas`.
"""

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tti_eval.common.atomic import atomic_write
from tti_eval.common.errors import TTIEvalError
from tti_eval.comparison.results import PerClassResult
from tti_eval.provenance import run_versions

from ._metrics import CONFIDENCE, N_RESAMPLES, SEED, EvaluationResult, Metric, Score
from .run import Skipped


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MetricRecord(_Frozen):
    """What a metric measures: its key, its label in tables, and its direction."""

    name: str
    label: str
    higher_is_better: bool


class ScoreRecord(_Frozen):
    """A metric's value with its percentile bootstrap interval."""

    label: str
    value: float
    low: float
    high: float


class OutcomesRecord(_Frozen):
    """The per-item arrays the metrics were computed from (scored images, or train queries for retrieval)."""

    labels: list[int]
    predictions: list[int] | None = Field(None, description="a classifier's predicted class per scored image")
    top5_hits: list[bool] | None = Field(None, description="whether the true class ranks in a classifier's top 5")
    per_query_scores: list[float] | None = Field(None, description="a retrieval evaluator's score per query")


class EvaluationRecord(_Frozen):
    """One evaluator on one (model, dataset) pair and split."""

    model: str
    dataset: str
    split: str = Field(description="the scored split; train is always the one fitted or searched")
    evaluator: str
    main_metric: MetricRecord
    metrics: dict[str, ScoreRecord] = Field(description="every metric the evaluator reports, by name")
    parameters: dict[str, Any] = Field(description="the evaluator's parameters, defaults included")
    chosen: dict[str, float] = Field(description="parameters the evaluator chose itself, e.g. the linear probe's C")
    note: str
    approximate: bool = Field(description="scores from an approximate neighbour search (its recall is in the note)")
    n_train: int
    n_scored: int
    class_names: list[str] | None
    per_class: PerClassResult | None = Field(description="recall with interval, precision, support, confusion")
    fingerprints: dict[str, dict[str, Any] | None] = Field(
        description="each read split's stored cache fingerprint (None: provenance unknown)"
    )
    outcomes: OutcomesRecord


class SkippedRecord(_Frozen):
    model: str
    dataset: str
    evaluator: str
    reason: str = Field(description="why the evaluator could not score the pair")


class EvaluationFile(_Frozen):
    """Everything one `tti-eval evaluate --save` scored, and what it could not."""

    created: str
    seed: int
    n_resamples: int
    confidence: float
    versions: dict[str, str]
    results: list[EvaluationRecord]
    skipped: list[SkippedRecord] = Field(default_factory=list, description="evaluators that skipped a pair")


def _list(array: np.ndarray | None) -> list | None:
    return None if array is None else np.asarray(array).tolist()


def to_record(result: EvaluationResult) -> EvaluationRecord:
    labels = {metric.name: metric.label for metric in _metrics_of(result)}
    return EvaluationRecord(
        model=result.model,
        dataset=result.dataset,
        split=result.split,
        evaluator=result.evaluator,
        main_metric=MetricRecord(**vars(result.main_metric)),
        metrics={
            name: ScoreRecord(label=labels.get(name, name), value=s.value, low=s.low, high=s.high)
            for name, s in result.metrics.items()
        },
        parameters=result.params,
        chosen=result.chosen,
        note=result.note,
        approximate=result.approximate,
        n_train=result.n_train,
        n_scored=result.n_scored,
        class_names=None if result.class_names is None else list(result.class_names),
        per_class=result.per_class,
        fingerprints=result.fingerprints,
        outcomes=OutcomesRecord(
            labels=_list(result.labels) or [],
            predictions=_list(result.predictions),
            top5_hits=_list(result.top5_hits),
            per_query_scores=_list(result.per_query_scores),
        ),
    )


def _metrics_of(result: EvaluationResult) -> Sequence[Metric]:
    """The declared metrics of the result's evaluator when it is registered (for their labels)."""
    from .base import EVALUATORS

    evaluator = EVALUATORS.get(result.evaluator)
    return evaluator.spec.metrics if evaluator is not None else (result.main_metric,)


def from_record(record: EvaluationRecord) -> EvaluationResult:
    """The result a record was written from (what `compare_results` and the report read)."""

    def array(values: list | None, dtype: type) -> np.ndarray | None:
        return None if values is None else np.asarray(values, dtype=dtype)

    outcomes = record.outcomes
    return EvaluationResult(
        record.model,
        record.dataset,
        record.evaluator,
        Metric(**record.main_metric.model_dump()),
        {name: Score(value=s.value, low=s.low, high=s.high) for name, s in record.metrics.items()},
        record.note,
        labels=array(outcomes.labels, np.int64),
        predictions=array(outcomes.predictions, np.int64),
        top5_hits=array(outcomes.top5_hits, bool),
        per_query_scores=array(outcomes.per_query_scores, np.float64),
        split=record.split,
        params=record.parameters,
        chosen=record.chosen,
        n_train=record.n_train,
        n_scored=record.n_scored,
        class_names=None if record.class_names is None else tuple(record.class_names),
        fingerprints=record.fingerprints,
        per_class=record.per_class,
        approximate=record.approximate,
    )


def evaluation_file(
    results: Iterable[EvaluationResult],
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    confidence: float = CONFIDENCE,
    skipped: Iterable[Skipped] = (),
) -> EvaluationFile:
    return EvaluationFile(
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        seed=seed,
        n_resamples=n_resamples,
        confidence=confidence,
        versions=run_versions(),
        results=[to_record(result) for result in results],
        skipped=[SkippedRecord(**entry._asdict()) for entry in skipped],
    )


def write_json(
    results: Iterable[EvaluationResult],
    path: Path,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    skipped: Iterable[Skipped] = (),
) -> Path:
    """Write `evaluation_file(results, skipped=skipped)` to `path` in one step and return the path."""
    file = evaluation_file(results, n_resamples, seed, skipped=skipped)
    text = file.model_dump_json()  # compact: outcomes can be long
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def load_evaluation(path: Path) -> EvaluationFile:
    """Read a saved `eval_<timestamp>.json`, with one sentence for a file that is not one."""
    try:
        return EvaluationFile.model_validate_json(path.read_bytes())
    except OSError as error:
        raise TTIEvalError(
            f"Cannot read {path} ({error.strerror}); give the path of a saved evaluation JSON."
        ) from None
    except ValidationError as error:
        where = ".".join(map(str, error.errors()[0]["loc"])) or "the top level"
        raise TTIEvalError(
            f"{path} is not a saved evaluation ({error.error_count()} problems, first at {where}); give an "
            "eval_<timestamp>.json."
        ) from None
