"""The four evaluators, their registry by title, and the orchestration that runs them on cached embeddings."""

from difflib import get_close_matches

from tti_eval.common.errors import UnknownTitleError

from .base import ClassificationModel, EvaluationModel
from .evaluator import EvaluationRun, run_evaluation
from .image_retrieval import I2IRetrievalEvaluator
from .knn import WeightedKNNClassifier
from .linear_probe import LinearProbeClassifier
from .metrics import EvaluationResult, Score
from .zero_shot import ZeroShotClassifier


def _register(*evaluators: type[EvaluationModel]) -> dict[str, type[EvaluationModel]]:
    registry: dict[str, type[EvaluationModel]] = {}
    for evaluator in evaluators:
        title = evaluator.title()
        if title.lower() in (known.lower() for known in registry):
            raise ValueError(f"Two evaluators share the title '{title}'")
        registry[title] = evaluator
    return registry


# In the order the original tool printed its tables.
EVALUATORS: dict[str, type[EvaluationModel]] = _register(
    ZeroShotClassifier, LinearProbeClassifier, WeightedKNNClassifier, I2IRetrievalEvaluator
)


def get_evaluator(title: str) -> type[EvaluationModel]:
    """The evaluator with this title (case-insensitive)."""
    by_lower = {known.lower(): evaluator for known, evaluator in EVALUATORS.items()}
    if title.lower() in by_lower:
        return by_lower[title.lower()]
    close = get_close_matches(title, list(EVALUATORS), n=2, cutoff=0.4)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else f"choose from {', '.join(EVALUATORS)}."
    raise UnknownTitleError(f"There is no evaluator called '{title}'; {hint}")


__all__ = [
    "EVALUATORS",
    "ClassificationModel",
    "EvaluationModel",
    "EvaluationResult",
    "EvaluationRun",
    "I2IRetrievalEvaluator",
    "LinearProbeClassifier",
    "Score",
    "WeightedKNNClassifier",
    "ZeroShotClassifier",
    "get_evaluator",
    "run_evaluation",
]
