"""Evaluators of cached embeddings, each declared in its own module, and the run that scores pairs with them.

Importing an evaluator's module registers it; the built-ins are imported here in the original tool's table order,
which is the registry's order. Notebooks and plugins call `register_evaluator` on their own class.
"""

from ._metrics import CONFIDENCE, N_RESAMPLES, SEED, EvaluationResult, Metric, Score
from .base import (
    EVALUATORS,
    ClassificationModel,
    EvaluationModel,
    EvaluatorSpec,
    InvalidParametersError,
    get_evaluator,
    register_evaluator,
)
from .zero_shot import ZeroShotClassifier  # isort: split

from .linear_probe import LinearProbeClassifier  # isort: split

from .knn import WeightedKNNClassifier  # isort: split

from .image_retrieval import I2IRetrievalEvaluator  # isort: split

from .run import EvaluationRun, run_evaluation

__all__ = [
    "CONFIDENCE",
    "EVALUATORS",
    "ClassificationModel",
    "EvaluationModel",
    "EvaluationResult",
    "EvaluationRun",
    "EvaluatorSpec",
    "I2IRetrievalEvaluator",
    "InvalidParametersError",
    "LinearProbeClassifier",
    "Metric",
    "N_RESAMPLES",
    "SEED",
    "Score",
    "WeightedKNNClassifier",
    "ZeroShotClassifier",
    "get_evaluator",
    "register_evaluator",
    "run_evaluation",
]
