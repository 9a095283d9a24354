from typing import TYPE_CHECKING

from .provider import ModelProvider
from .spec import ModelDefinitionSpec

if TYPE_CHECKING:
    from .base import Model

__all__ = ["Model", "ModelDefinitionSpec", "ModelProvider"]


def __getattr__(name: str):
    # `Model` imports torch; keep `import tti_eval.model` light for `tti-eval --help` and `list`.
    if name == "Model":
        from .base import Model

        return Model
    raise AttributeError(name)
