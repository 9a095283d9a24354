"""Titles and the (model, dataset) pair: the unit that is built, cached, evaluated and animated.

Apart from the embeddings (`base.py`, which needs numpy), so that listing the cache imports no numpy.
"""

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .errors import TTIEvalError

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
