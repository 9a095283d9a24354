"""The pictures of the HTML report, as PNG bytes ready to inline."""

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tti_eval.comparison.results import GroupComparison

BEST, TIED, OTHER = "#1f4e79", "#6fa8dc", "#b7b7b7"


def png_bytes(figure: Figure, dpi: int = 110) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def group_chart(group: GroupComparison) -> Figure:
    """One bar per model, best on top, with its interval as an error bar; the best and the models tied with it
    stand out in colour, so the set of defensible choices reads at a glance."""
    tied = {comparison.model for comparison in group.comparisons if comparison.tied_with_best}
    results = group.results
    figure = Figure(figsize=(7.5, 1.0 + 0.32 * len(results)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    values = np.array([r.value for r in results])
    errors = np.array([[r.value - r.low, r.high - r.value] for r in results]).T
    colours = [BEST if k == 0 else TIED if r.model in tied else OTHER for k, r in enumerate(results)]
    positions = np.arange(len(results))
    bars = axes.barh(
        positions, values, xerr=errors, color=colours, capsize=3, error_kw={"elinewidth": 1, "ecolor": "0.2"}
    )
    axes.bar_label(bars, labels=[f"{v:.3f}" for v in values], label_type="center", fontsize=7, color="white")
    axes.set_yticks(positions, [r.model for r in results], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0, max(1.0, max(r.high for r in results)))  # bars from 0: their lengths stay comparable
    axes.set_xlabel(f"{group.metric} (error bars: {group.n} images, bootstrap interval)")
    axes.grid(axis="x", alpha=0.3)
    axes.set_axisbelow(True)
    axes.set_title(f"{group.dataset} · {group.evaluator} · {group.split}   dark: best, light blue: tied with best")
    return figure
