"""The small typed objects every stage passes along: splits, embeddings and (model, dataset) pairs (the pairs and
splits live in `pairs.py` and `split.py`, which need no numpy, and are re-exported here).

Plain values: reading and writing them is the cache's job (`tti_eval.common.cache`), so this module imports no I/O.
"""

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

# Re-exported: `tti_eval.common.base` is where code has long imported them from.
from .pairs import EmbeddingDefinition as EmbeddingDefinition
from .pairs import SafeName as SafeName
from .pairs import SafeTitle as SafeTitle
from .pairs import check_title as check_title
from .split import Split as Split
from .vectors import check_vectors


class Embeddings(BaseModel):
    """Image embeddings [N, D] with their integer labels [N], and optionally one embedding per class [C, D]."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    images: np.ndarray
    labels: np.ndarray
    classes: np.ndarray | None = None

    @field_validator("images", "classes", mode="before")
    @classmethod
    def _as_float32_matrix(cls, value: Any, info) -> np.ndarray | None:
        if value is None:
            return None
        array = np.asarray(value, dtype=np.float32)
        if array.ndim != 2:
            raise ValueError(f"{info.field_name} must be a 2-D array [N, D], got shape {array.shape}")
        return array

    @field_validator("labels", mode="before")
    @classmethod
    def _as_int_vector(cls, value: Any) -> np.ndarray:
        array = np.asarray(value)
        if array.ndim != 1:
            raise ValueError(f"labels must be a 1-D array [N], got shape {array.shape}")
        if array.size and not np.issubdtype(array.dtype, np.number):
            raise ValueError(f"labels must be integers, got {array.dtype}")
        if array.size and not np.issubdtype(array.dtype, np.integer) and not np.all(np.mod(array, 1) == 0):
            raise ValueError("labels must be integers")
        if array.size and array.min() < 0:
            raise ValueError("labels must be non-negative class indices")
        return array.astype(np.int64, copy=False)

    @model_validator(mode="after")
    def _shapes_agree(self) -> "Embeddings":
        if self.labels.shape[0] != self.images.shape[0]:
            raise ValueError(f"images has {self.images.shape[0]} rows but labels has {self.labels.shape[0]} entries")
        if self.classes is not None and self.classes.shape[1] != self.images.shape[1]:
            raise ValueError(
                f"classes have dimension {self.classes.shape[1]} but images have dimension {self.images.shape[1]}"
            )
        return self

    @property
    def dim(self) -> int:
        return self.images.shape[1]

    def check_usable(self, name: str = "embeddings") -> None:
        """Zero or non-finite vectors cannot be normalised; say so instead of producing NaN scores."""
        check_vectors(self.images, f"{name} images")
        if self.classes is not None:
            check_vectors(self.classes, f"{name} class embeddings")
