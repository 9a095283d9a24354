"""The typed objects, settings, errors and cache every stage shares.

Names are imported from their modules on first use, so that `import tti_eval.common.split` (what the CLI needs to
declare its options) does not import numpy and pydantic.
"""

from typing import TYPE_CHECKING

from .lazy import lazy_attributes

if TYPE_CHECKING:
    from .base import Embeddings
    from .cache import embeddings_exist, load_embeddings, save_embeddings
    from .errors import CacheError, DefinitionError, InvalidEmbeddingsError, TTIEvalError, UnknownTitleError
    from .numpy_types import ClassArray, EmbeddingArray, ProbabilityArray, ReductionArray
    from .pairs import EmbeddingDefinition, SafeTitle, check_title
    from .settings import Settings, get_settings
    from .split import Split

_MODULE_OF = {
    "Embeddings": ".base",
    **dict.fromkeys(["EmbeddingDefinition", "SafeTitle", "check_title"], ".pairs"),
    "Split": ".split",
    **dict.fromkeys(["embeddings_exist", "load_embeddings", "save_embeddings"], ".cache"),
    **dict.fromkeys(
        ["CacheError", "DefinitionError", "InvalidEmbeddingsError", "TTIEvalError", "UnknownTitleError"], ".errors"
    ),
    **dict.fromkeys(["ClassArray", "EmbeddingArray", "ProbabilityArray", "ReductionArray"], ".numpy_types"),
    **dict.fromkeys(["Settings", "get_settings"], ".settings"),
}

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

__getattr__ = lazy_attributes(__name__, _MODULE_OF)
