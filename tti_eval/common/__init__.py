from .base import EmbeddingDefinition, Embeddings, SafeTitle, Split, check_title
from .errors import CacheError, DefinitionError, InvalidEmbeddingsError, TTIEvalError, UnknownTitleError
from .settings import Settings, get_settings

__all__ = [
    "CacheError",
    "DefinitionError",
    "EmbeddingDefinition",
    "Embeddings",
    "InvalidEmbeddingsError",
    "SafeTitle",
    "Settings",
    "Split",
    "TTIEvalError",
    "UnknownTitleError",
    "check_title",
    "get_settings",
]
