"""Deciding between models on the same images: paired statistics, ranked comparisons and their JSON/markdown files.

`compare_models(outcomes)` takes each model's per-image outcomes (`ModelOutcomes`) and returns a `ComparisonRun`;
`save_comparison` writes it, `load_comparison` reads it back (for `tti_eval.report`).
"""

from .compare import ModelOutcomes, compare_models
from .results import ComparisonRun
from .writers import load_comparison, render_markdown, save_comparison

__all__ = ["ComparisonRun", "ModelOutcomes", "compare_models", "load_comparison", "render_markdown", "save_comparison"]
