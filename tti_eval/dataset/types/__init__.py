"""The built-in dataset types, importable as in the original tool (`from tti_eval.dataset.types import ...`).

Each is imported on first use only, so importing one type never pulls in the libraries of the others."""

from tti_eval.common.registry import _import_string
from tti_eval.dataset.spec import BUILTIN_DATASET_TYPES

__all__ = list(BUILTIN_DATASET_TYPES)


def __getattr__(name: str) -> type:
    if name in BUILTIN_DATASET_TYPES:
        return _import_string(BUILTIN_DATASET_TYPES[name].implementation)
    raise AttributeError(name)
