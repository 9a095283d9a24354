"""The CSV of an evaluation: the original tool's four columns first, so its readers keep working, then the rest.

Columns: `Model, Dataset, Classifier, Accuracy` (the primary score of every evaluator, I2IR included), then for each
metric in `METRIC_LABELS` its value and the bounds of its 95 % bootstrap interval (`Accuracy low`, `Accuracy high`,
`Top-5 accuracy`, ...), empty where an evaluator does not report it, and finally `Note`.
"""

import csv
import io
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from tti_eval.common.atomic import atomic_write
from tti_eval.common.settings import get_settings

from .metrics import METRIC_LABELS, EvaluationResult

# The primary metric comes first in METRIC_LABELS, so "Accuracy" stays the fourth column as in the original tool.
COLUMNS = [
    "Model",
    "Dataset",
    "Classifier",
    *(column for label in METRIC_LABELS.values() for column in (label, f"{label} low", f"{label} high")),
    "Note",
]


def evaluation_csv_path(now: datetime | None = None) -> Path:
    """`$TTI_EVAL_OUTPUT_PATH/evaluations/eval_<timestamp>.csv`; the timestamp has no ':' so it is a valid file name
    everywhere."""
    stamp = (now or datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
    return get_settings().output_path / "evaluations" / f"eval_{stamp}.csv"


def _row(result: EvaluationResult) -> list[str | float]:
    cells: list[str | float] = [result.model, result.dataset, result.evaluator]
    for key in METRIC_LABELS:
        score = result.metrics.get(key)
        cells += [score.value, score.low, score.high] if score else ["", "", ""]
    return [*cells, result.note]


def write_csv(results: Iterable[EvaluationResult], path: Path) -> Path:
    """Write one row per result to `path` in one step (a reader never sees half a file) and return the path."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(COLUMNS)
    writer.writerows(_row(result) for result in results)
    atomic_write(path, lambda handle: handle.write(text.getvalue().encode("utf-8")))
    return path
