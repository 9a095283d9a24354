from .base import EmbeddingDefinition, Embeddings, SafeTitle, Split, check_title
from .cache import embeddings_exist, load_embeddings, save_embeddings
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
    "embeddings_exist",
    "get_settings",
    "load_embeddings",
    "save_embeddings",
]
