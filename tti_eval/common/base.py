"""The small typed objects every stage passes along: splits, embeddings and (model, dataset) pairs.

Plain values: reading and writing them is the cache's job (`tti_eval.common.cache`), so this module imports no I/O.
"""

import re
from enum import StrEnum
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import TTIEvalError
from .vectors import check_vectors

_SAFE_TITLE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+@-]*")
# A title is a file or folder name in the cache, and its temporary files add a split, the host name and a pid to it;
# 120 ASCII characters keeps all of them under the 255 bytes most file systems allow for a name.
MAX_TITLE_LENGTH = 120
# Names Windows reserves for devices: a folder called `con` cannot be created there, whatever its extension.
_RESERVED_NAMES = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
)


def check_title(title: str) -> str:
    """Titles become file names in the cache, so none may climb out of it (`..`, `/`, `\\`, absolute paths), and each
    must be a name every common file system accepts."""
    if not _SAFE_TITLE.fullmatch(title) or ".." in title:
        raise ValueError(
            f"'{title}' is not a valid title: use letters, digits and '_', '.', '+', '@', '-' "
            "(no '/', '\\', '..', spaces, or a leading '.')"
        )
    if len(title) > MAX_TITLE_LENGTH:
        raise ValueError(
            f"the title is {len(title)} characters long, too long for a file name; shorten it to {MAX_TITLE_LENGTH}"
        )
    if title.endswith(".") or title.split(".")[0].lower() in _RESERVED_NAMES:
        raise ValueError(f"'{title}' cannot be a file name on Windows; choose another title")
    return title


SafeTitle = Annotated[str, AfterValidator(check_title), Field(json_schema_extra={"pattern": _SAFE_TITLE.pattern})]
SafeName = SafeTitle  # the original tool's name for it


class Split(StrEnum):
    TRAIN = "train"
    VALIDATION = "validation"
    TEST = "test"
    ALL = "all"

    @classmethod
    def _missing_(cls, value: object) -> "Split | None":
        # "Train" names the train split, as evaluator and reduction titles match in any letter case
        return next((s for s in cls if isinstance(value, str) and s.value == value.lower()), None)


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


class EmbeddingDefinition(BaseModel):
    """One (model, dataset) pair: the unit that is built, cached, evaluated and animated."""

    model_config = ConfigDict(frozen=True, protected_namespaces=())

    model: SafeTitle
    dataset: SafeTitle

    def __str__(self) -> str:
        return f"{self.model}/{self.dataset}"

    @classmethod
    def parse(cls, text: str) -> "EmbeddingDefinition":
        """Read the CLI's `MODEL/DATASET` form."""
        model, sep, dataset = text.partition("/")
        if not sep or not model or not dataset or "/" in dataset:
            raise TTIEvalError(f"'{text}' is not of the form MODEL/DATASET, e.g. clip/plants.")
        try:
            return cls(model=model, dataset=dataset)
        except ValueError as e:
            raise TTIEvalError(f"'{text}' is not a valid MODEL/DATASET pair: {_first_error(e)}.") from None


def _first_error(error: ValueError) -> str:
    errors = getattr(error, "errors", None)
    if callable(errors):
        return str(errors()[0]["msg"]).removeprefix("Value error, ")
    return str(error)
