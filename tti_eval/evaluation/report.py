"""The CSV of an evaluation: the original tool's four columns first, so its readers keep working, then the rest.

Columns: `Model, Dataset, Classifier, Accuracy` (`Accuracy` holds each evaluator's main metric, whatever it measures,
as the original tool's did for I2IR too), `Accuracy low`, `Accuracy high` (its 95 % bootstrap interval), then for
every other metric the registered evaluators declare its value and interval (`Top-5 accuracy`, `Top-5 accuracy low`,
...), empty where an evaluator does not report it (`Accuracy (extra)` for the accuracy of an evaluator whose main
metric is another), then `Metric` (the label of what `Accuracy` holds) and `Note`.
"""

import csv
import io
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from tti_eval.common.atomic import atomic_write
from tti_eval.common.settings import get_settings

from ._metrics import ACCURACY, EvaluationResult, Metric
from .base import EVALUATORS
from .run import Skipped

MAIN_COLUMN = ACCURACY.label  # the original tool's name for its one number


def _with_interval(label: str) -> list[str]:
    return [label, f"{label} low", f"{label} high"]


def metric_column(metric: Metric) -> str:
    """The header of a metric that is not the row's main one; accuracy, when an evaluator reports it beside another
    main metric, must not take the original tool's `Accuracy` column."""
    return f"{metric.label} (extra)" if metric.label == MAIN_COLUMN else metric.label


def extra_metrics() -> list[Metric]:
    """Every metric a registered evaluator reports besides its main one, in declaration order."""
    found: dict[str, Metric] = {}
    for evaluator in EVALUATORS.values():
        spec = evaluator.spec
        found.update((m.name, m) for m in spec.metrics if m != spec.main_metric and m.name not in found)
    return list(found.values())


def csv_columns() -> list[str]:
    """The header, derived from the registered evaluators' declarations."""
    extra = [column for metric in extra_metrics() for column in _with_interval(metric_column(metric))]
    return ["Model", "Dataset", "Classifier", *_with_interval(MAIN_COLUMN), *extra, "Metric", "Note"]


def _row(result: EvaluationResult, extra: list[Metric]) -> list[str | float]:
    cells: list[str | float] = [result.model, result.dataset, result.evaluator]
    for score in (result.score, *(result.metrics.get(metric.name) for metric in extra)):
        cells += [score.value, score.low, score.high] if score else ["", "", ""]
    return [*cells, result.main_metric.label, result.note]


def evaluation_csv_path(now: datetime | None = None) -> Path:
    """`$TTI_EVAL_OUTPUT_PATH/evaluations/eval_<timestamp>.csv`; the timestamp has no ':' so it is a valid file name
    everywhere."""
    stamp = (now or datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
    return get_settings().output_path / "evaluations" / f"eval_{stamp}.csv"


def _skipped_row(skipped: Skipped, extra: list[Metric]) -> list[str | float]:
    main = EVALUATORS[skipped.evaluator].spec.main_metric
    return [
        skipped.model,
        skipped.dataset,
        skipped.evaluator,
        *[""] * (3 * (1 + len(extra))),
        main.label,
        f"Skipped: {skipped.reason}",
    ]


def write_csv(results: Iterable[EvaluationResult], path: Path, skipped: Iterable[Skipped] = ()) -> Path:
    """Write one row per result to `path` in one step (a reader never sees half a file) and return the path; each
    evaluator that `skipped` a pair gets a row without numbers whose Note says why, so the file shows the gap."""
    extra = extra_metrics()
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(csv_columns())
    writer.writerows(_row(result, extra) for result in results)
    writer.writerows(_skipped_row(entry, extra) for entry in skipped)
    atomic_write(path, lambda handle: handle.write(text.getvalue().encode("utf-8")))
    return path
