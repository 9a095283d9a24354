"""A grouped bar chart of one evaluator's scores: datasets along x, one bar per model, 95 % intervals as error bars.

Drawn on a bare `Figure` with the Agg canvas rather than through pyplot, so nothing global (the pyplot backend,
its list of open figures) changes in the caller's process.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tti_eval.common.title_registry import natural_key
from tti_eval.evaluation import EvaluationResult
from tti_eval.evaluation._metrics import images_scored, scored_on

from ._png import save_png


def plot_scores(results: Sequence[EvaluationResult], evaluator_title: str, path: Path) -> Path:
    """Save the chart of `evaluator_title`'s main metric over every (model, dataset) in `results` as a PNG."""
    figure = scores_figure(results, evaluator_title)
    return save_png(figure, path)


def scores_figure(results: Sequence[EvaluationResult], evaluator_title: str) -> Figure:
    """The chart `plot_scores` saves: one bar container per model (in legend order), each with its error bars."""
    mine = [r for r in results if r.evaluator == evaluator_title]
    if not mine:
        raise ValueError(f"no {evaluator_title} results to plot")
    chosen = {(r.model, r.dataset): r.score for r in mine}
    models = sorted({model for model, _ in chosen}, key=natural_key)
    datasets = sorted({dataset for _, dataset in chosen}, key=natural_key)

    figure = Figure(figsize=(max(6.0, 1.2 + len(datasets) * (0.5 + 0.45 * len(models))), 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    positions = np.arange(len(datasets))
    width = min(0.8 / len(models), 0.35)  # a lone model would otherwise get one slab per dataset
    for index, model in enumerate(models):
        scores = [chosen.get((model, dataset)) for dataset in datasets]  # None: this pair was not evaluated
        values = np.array([s.value if s else np.nan for s in scores])
        errors = np.array([[s.value - s.low, s.high - s.value] if s else [0.0, 0.0] for s in scores]).T
        bars = axes.bar(
            positions + (index - (len(models) - 1) / 2) * width,
            values,
            width,
            yerr=errors,
            capsize=3,
            label=model,
            error_kw={"elinewidth": 1, "ecolor": "0.25"},
        )
        labels = [f"{v:.3f}" if np.isfinite(v) else "" for v in values]
        axes.bar_label(bars, labels=labels, label_type="center", rotation=90, fontsize=8, color="white")
    # each dataset with the number of images its scores are over, as in the tables
    labels = [f"{d}\n{images_scored(r.n_scored for r in mine if r.dataset == d)}" for d in datasets]
    axes.set_xticks(
        positions, labels, rotation=30 if len(datasets) > 4 else 0, ha="right" if len(datasets) > 4 else "center"
    )
    axes.set_xlabel("Dataset")
    axes.set_ylabel(mine[0].main_metric.label)
    axes.set_ylim(0, 1.05)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)
    shows = scored_on(mine[0].main_metric.label, (r.split for r in mine))
    axes.set_title(f"{evaluator_title}: {shows}\n(error bars: 95 % bootstrap interval)")
    axes.legend(title="Model", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return figure
