from typing import TYPE_CHECKING, Any

from tti_eval.common.registry import DefinitionRegistry

from .spec import BUILTIN_MODEL_TYPES, ModelDefinitionSpec

if TYPE_CHECKING:
    from .base import Model

_registry: DefinitionRegistry["Model"] = DefinitionRegistry(
    "model", ModelDefinitionSpec, "tti_eval.model.base:Model", BUILTIN_MODEL_TYPES
)


class ModelProvider:
    """Every model tti-eval knows: `sources/models`, `$TTI_EVAL_SOURCES_PATH/models`, `register_model`."""

    registry = _registry

    @classmethod
    def register_model(cls, model_class: type["Model"], title: str, **fields: Any) -> None:
        cls.registry.register(model_class, title, **fields)

    @classmethod
    def get_model(cls, title: str, **overrides: Any) -> "Model":
        return cls.registry.create(title, **overrides)

    @classmethod
    def list_model_titles(cls) -> list[str]:
        return cls.registry.titles()
