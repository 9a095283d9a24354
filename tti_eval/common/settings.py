"""Where tti-eval keeps its files, read from the environment (and a `.env` file) each time it is asked.

Read anew on every call rather than once at import, so that a notebook or a test can change
`TTI_EVAL_CACHE_PATH` and be obeyed at once.
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from .errors import TTIEvalError

PACKAGE_PATH = Path(__file__).resolve().parent.parent


def _default_cache_path() -> Path:
    # One cache per user, shared by every working directory, like other model tooling (~/.cache/huggingface).
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tti-eval"


def builtin_sources_path() -> Path:
    """The definitions shipped with tti-eval: `sources/` beside the package, in a checkout and in site-packages alike
    (poetry-core installs non-package data at the top level); `tti_eval/sources` is looked at first."""
    for candidate in (PACKAGE_PATH / "sources", PACKAGE_PATH.parent / "sources"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"tti-eval's built-in sources/ folder is missing next to {PACKAGE_PATH}; reinstall tti-eval."
    )


class Settings(BaseModel):
    """Keyword arguments (by field name or variable name) win over the environment, which wins over a `.env` file in
    the working directory. Plain pydantic rather than pydantic-settings, whose import alone (asyncio and more) cost
    more CPU time than the rest of `tti-eval list`."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    cache_path: Path = Field(default_factory=_default_cache_path, validation_alias="TTI_EVAL_CACHE_PATH")
    output_path: Path = Field(default=Path("output"), validation_alias="TTI_EVAL_OUTPUT_PATH")
    # Several folders may be given, separated by os.pathsep (':' here, ';' on Windows), read in that order.
    sources_path: str | None = Field(default=None, validation_alias="TTI_EVAL_SOURCES_PATH")
    encord_ssh_key_path: Path | None = Field(
        default=None, validation_alias=AliasChoices("ENCORD_SSH_KEY_PATH", "TTI_EVAL_ENCORD_SSH_KEY_PATH")
    )

    @property
    def sources_paths(self) -> list[Path]:
        """The folders named by `TTI_EVAL_SOURCES_PATH`, in order; empty entries (a stray separator) are dropped."""
        return [Path(part).expanduser() for part in (self.sources_path or "").split(os.pathsep) if part]

    @property
    def embeddings_path(self) -> Path:
        return self.cache_path / "embeddings"

    @property
    def reductions_path(self) -> Path:
        return self.cache_path / "reductions"

    @property
    def models_path(self) -> Path:
        return self.cache_path / "models"

    @property
    def datasets_path(self) -> Path:
        return self.cache_path / "datasets"

    def __init__(self, **values: Any) -> None:
        super().__init__(**{**_fields_set_by(_dotenv()), **_fields_set_by(os.environ), **values})


def _dotenv() -> dict[str, str | None]:
    path = Path(".env")
    if not path.is_file():
        return {}
    from dotenv import dotenv_values  # only when there is a file to read: most runs have none

    return dotenv_values(path, encoding="utf-8")


def _fields_set_by(variables: Mapping[str, str | None]) -> dict[str, str]:
    """The settings that `variables` give, by field name. Names match whatever their case (as pydantic-settings
    matched them); a field with several variable names takes the first one set; a name without a value (a bare `KEY`
    line in `.env`) sets nothing."""
    given = {name.lower(): value for name, value in variables.items() if value is not None}
    found = {}
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        for name in alias.choices if isinstance(alias, AliasChoices) else [alias]:
            if name.lower() in given:
                found[field] = given[name.lower()]
                break
    return found


def get_settings() -> Settings:
    """The settings as the environment and `.env` give them now; a `.env` that cannot be read, or a cache path that
    is a file, is one sentence for every command rather than a traceback or a misleading "nothing cached"."""
    try:
        settings = Settings()
    except (OSError, UnicodeDecodeError) as e:
        reason = (
            e.strerror
            if isinstance(e, OSError) and e.strerror
            else f"not UTF-8 text at byte {getattr(e, 'start', '?')}"
        )
        raise TTIEvalError(
            f"The .env file in {Path.cwd()} cannot be read ({reason}); make it a readable UTF-8 text file or remove it."
        ) from None
    if settings.cache_path.exists() and not settings.cache_path.is_dir():
        raise TTIEvalError(
            f"The cache path {settings.cache_path} is a file, not a folder; point TTI_EVAL_CACHE_PATH at a folder."
        )
    return settings
