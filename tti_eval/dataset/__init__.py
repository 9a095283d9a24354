from typing import TYPE_CHECKING

from tti_eval.common.lazy import lazy_attributes

if TYPE_CHECKING:
    from tti_eval.common.split import Split

    from .base import Dataset
    from .provider import DatasetProvider
    from .spec import DatasetDefinitionSpec

__all__ = ["Dataset", "DatasetDefinitionSpec", "DatasetProvider", "Split"]

# `Dataset` imports torch and the provider pydantic: `import tti_eval.dataset` stays light for `tti-eval --help`.
__getattr__ = lazy_attributes(
    __name__,
    {
        "Dataset": ".base",
        "DatasetDefinitionSpec": ".spec",
        "DatasetProvider": ".provider",
        "Split": "tti_eval.common.split",
    },
)
