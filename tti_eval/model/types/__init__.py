"""The built-in model types, importable as in the original tool (`from tti_eval.model.types import ...`).

Each is imported on first use only, so importing one type never pulls in the libraries of the others."""

from tti_eval.common.registry import _import_string
from tti_eval.model.spec import BUILTIN_MODEL_TYPES

__all__ = list(BUILTIN_MODEL_TYPES)


def __getattr__(name: str) -> type:
    if name in BUILTIN_MODEL_TYPES:
        return _import_string(BUILTIN_MODEL_TYPES[name].implementation)
    raise AttributeError(name)
