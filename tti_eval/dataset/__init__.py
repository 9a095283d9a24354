from typing import TYPE_CHECKING

from tti_eval.common.base import Split

from .provider import DatasetProvider
from .spec import DatasetDefinitionSpec

if TYPE_CHECKING:
    from .base import Dataset

__all__ = ["Dataset", "DatasetDefinitionSpec", "DatasetProvider", "Split"]


def __getattr__(name: str):
    # `Dataset` imports torch; keep `import tti_eval.dataset` light for `tti-eval --help` and `list`.
    if name == "Dataset":
        from .base import Dataset

        return Dataset
    raise AttributeError(name)
