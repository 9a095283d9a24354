"""Where a classifier goes wrong: its confusion matrix with rows normalised (each true class sums to 1, so small
classes read as clearly as large ones), or, beyond what a matrix can label legibly, the most-confused class pairs.

Drawn on a bare `Figure` with the Agg canvas, like the score charts, so no pyplot state changes in the caller.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tti_eval.evaluation._metrics import images_scored, scored_on

from ._png import save_png

MAX_MATRIX_CLASSES = 40  # beyond this, class names on the axes overlap at any figure size that fits a page
TOP_PAIRS = 25
ANNOTATE_UP_TO = 15  # classes whose cells still have room for a printed percentage


def row_normalised(matrix: np.ndarray) -> np.ndarray:
    """Each row divided by its total (the class's support); rows of classes with no image stay 0."""
    matrix = np.asarray(matrix, dtype=np.float64)
    support = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, support, out=np.zeros_like(matrix), where=support > 0)


def most_confused_pairs(matrix: np.ndarray, top: int = TOP_PAIRS) -> list[tuple[int, int, float, int]]:
    """The off-diagonal (true, predicted) cells with the highest share of their true class, most confused first:
    (true, predicted, share, count). Shares tie-break on counts, then on class order."""
    matrix = np.asarray(matrix)
    rates = row_normalised(matrix)
    true, predicted = np.nonzero((matrix > 0) & ~np.eye(len(matrix), dtype=bool))
    order = np.lexsort((predicted, true, -matrix[true, predicted], -rates[true, predicted]))[:top]
    return [
        (int(true[k]), int(predicted[k]), float(rates[true[k], predicted[k]]), int(matrix[true[k], predicted[k]]))
        for k in order
    ]


def confusion_title(
    model: str, dataset: str, evaluator: str, metric_label: str, split: str, value: float, n_scored: int
) -> str:
    """A confusion matrix's title: whose it is, and the score it goes with (metric, split, images), as tables say it."""
    shows = f"{scored_on(metric_label, [split])} {value:.3f}, {images_scored([n_scored])}"
    return f"{model} on {dataset} · {evaluator}\n{shows}"


def _matrix_figure(matrix: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    count = len(class_names)
    side = min(12.0, max(4.5, 1.5 + 0.24 * count))
    figure = Figure(figsize=(side + 1.2, side), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    rates = row_normalised(matrix)
    image = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    font = 9 if count <= 20 else 7 if count <= 30 else 6
    axes.set_xticks(np.arange(count), class_names, rotation=90, fontsize=font)
    axes.set_yticks(np.arange(count), class_names, fontsize=font)
    axes.set_xlabel("Predicted class")
    axes.set_ylabel("True class")
    if count <= ANNOTATE_UP_TO:
        for (row, column), rate in np.ndenumerate(rates):
            if rate > 0:
                colour = "white" if rate > 0.6 else "0.15"
                axes.text(column, row, f"{rate:.0%}", ha="center", va="center", fontsize=8, color=colour)
    figure.colorbar(image, ax=axes, shrink=0.8, label="Share of the true class")
    axes.set_title(title)
    return figure


def _pairs_figure(matrix: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    pairs = most_confused_pairs(matrix)
    figure = Figure(figsize=(8.0, 1.2 + 0.28 * max(len(pairs), 1)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    labels = [f"{class_names[true]} → {class_names[predicted]}" for true, predicted, _, _ in pairs]
    shares = [share for _, _, share, _ in pairs]
    bars = axes.barh(np.arange(len(pairs)), shares, color="#4a7fb5")
    axes.bar_label(bars, labels=[f"{share:.0%} ({count})" for _, _, share, count in pairs], padding=3, fontsize=8)
    axes.set_yticks(np.arange(len(pairs)), labels, fontsize=8)
    axes.invert_yaxis()  # most confused on top
    axes.set_xlim(0, min(1.0, max(shares, default=0.1) * 1.25))
    axes.set_xlabel("Share of the true class predicted as the other (count)")
    axes.set_title(f"{title}: the {len(pairs)} most confused pairs of {len(class_names)} classes")
    return figure


def confusion_figure(matrix: np.ndarray, class_names: Sequence[str], title: str) -> Figure:
    """The row-normalised matrix up to `MAX_MATRIX_CLASSES` classes, the most-confused pairs beyond."""
    if len(class_names) != len(matrix):
        raise ValueError(f"{len(class_names)} class names for a {len(matrix)}-class confusion matrix")
    draw = _matrix_figure if len(class_names) <= MAX_MATRIX_CLASSES else _pairs_figure
    return draw(np.asarray(matrix), class_names, title)


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], title: str, path: Path) -> Path:
    """Save `confusion_figure` as a PNG at `path`."""
    figure = confusion_figure(matrix, class_names, title)
    return save_png(figure, path)
