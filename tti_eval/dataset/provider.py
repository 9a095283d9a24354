from typing import TYPE_CHECKING, Any

from tti_eval.common.registry import DefinitionRegistry
from tti_eval.common.split import Split

from .spec import BUILTIN_DATASET_TYPES, DatasetDefinitionSpec

if TYPE_CHECKING:
    from .base import Dataset

_registry: DefinitionRegistry["Dataset"] = DefinitionRegistry(
    "dataset", DatasetDefinitionSpec, "tti_eval.dataset.base:Dataset", BUILTIN_DATASET_TYPES
)


class DatasetProvider:
    """Every dataset tti-eval knows: `sources/datasets`, `$TTI_EVAL_SOURCES_PATH/datasets`, `register_dataset`."""

    registry = _registry

    @classmethod
    def register_dataset(
        cls, dataset_class: type["Dataset"], title: str, split: Split | None = None, **fields: Any
    ) -> None:
        cls.registry.register(dataset_class, title, split=split, **fields)

    @classmethod
    def get_dataset(cls, title: str, split: Split | None = None, **overrides: Any) -> "Dataset":
        """The dataset's `split` (default: the definition's own `split`, else all of it)."""
        return cls.registry.create(title, split=Split(split) if split is not None else None, **overrides)

    @classmethod
    def list_dataset_titles(cls) -> list[str]:
        return cls.registry.titles()
