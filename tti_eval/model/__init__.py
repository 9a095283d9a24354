from typing import TYPE_CHECKING

from tti_eval.common.lazy import lazy_attributes

if TYPE_CHECKING:
    from .base import Model
    from .provider import ModelProvider
    from .spec import ModelDefinitionSpec

__all__ = ["Model", "ModelDefinitionSpec", "ModelProvider"]

# `Model` imports torch and the provider pydantic: `import tti_eval.model` stays light for `tti-eval --help`.
__getattr__ = lazy_attributes(
    __name__, {"Model": ".base", "ModelDefinitionSpec": ".spec", "ModelProvider": ".provider"}
)
