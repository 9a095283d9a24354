from .base import EmbeddingDefinition, Embeddings, SafeTitle, Split, check_title
from .errors import CacheError, DefinitionError, InvalidEmbeddingsError, TTIEvalError, UnknownTitleError
from .numpy_types import ClassArray, EmbeddingArray, ProbabilityArray, ReductionArray
from .settings import Settings, get_settings

__all__ = [
    "CacheError",
    "ClassArray",
    "EmbeddingArray",
    "DefinitionError",
    "EmbeddingDefinition",
    "Embeddings",
    "InvalidEmbeddingsError",
    "ProbabilityArray",
    "ReductionArray",
    "SafeTitle",
    "Settings",
    "Split",
    "TTIEvalError",
    "UnknownTitleError",
    "check_title",
    "get_settings",
]
