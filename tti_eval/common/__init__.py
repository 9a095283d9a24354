from .base import EmbeddingDefinition, Embeddings, SafeTitle, Split, check_title
from .cache import embeddings_exist, load_embeddings, save_embeddings
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
    "embeddings_exist",
    "get_settings",
    "load_embeddings",
    "save_embeddings",
]
