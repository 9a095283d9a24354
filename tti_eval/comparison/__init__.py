"""Deciding between models on the same images: paired statistics, ranked comparisons and their JSON/markdown files.

`compare_models(outcomes)` takes each model's per-image outcomes (`ModelOutcomes`) and returns a `ComparisonRun`;
`compare_results` does the same from evaluation results, which keep their outcomes;
`save_comparison` writes it, `load_comparison` reads it back (for `tti_eval.report`).
"""

from .compare import ModelOutcomes, compare_models, compare_results, per_class_results, result_outcomes
from .results import ComparisonRun
from .writers import load_comparison, render_markdown, save_comparison

__all__ = [
    "ComparisonRun",
    "ModelOutcomes",
    "compare_models",
    "compare_results",
    "load_comparison",
    "per_class_results",
    "render_markdown",
    "result_outcomes",
    "save_comparison",
]
