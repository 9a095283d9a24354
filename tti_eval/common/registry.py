"""One registry mechanism behind `ModelProvider` and `DatasetProvider`.

Definitions come from JSON files (the built-in `sources/` and `$TTI_EVAL_SOURCES_PATH`) and from `register(...)`
calls. Only the validated spec is kept until an instance is asked for: a type's class is imported at that moment,
so listing titles never imports torch, transformers or the Encord SDK. Each built-in type declares its own fields
(a `TypeSpec` in `model/spec.py` / `dataset/spec.py`), so a definition of a built-in type is checked field by field as
it is read. A broken file is recorded in `problems` (file name and field) and skipped; the others still load.
"""

import functools
import importlib
import importlib.util
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import DefinitionError, UnknownTitleError
from .pairs import SafeTitle
from .settings import builtin_sources_path, get_settings
from .title_registry import did_you_mean, natural_key

T = TypeVar("T")


class DefinitionSpec(BaseModel):
    """Fields shared by model and dataset definitions. A definition whose class comes from `module_path` may carry
    extra fields: they are passed on to the class, whose `_setup` signature decides whether it accepts them."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())
    type_field: ClassVar[str]

    title: SafeTitle
    title_in_source: str | None = None
    module_path: Path | None = None
    cache_dir: Path | None = None

    @property
    def type_name(self) -> str:
        return getattr(self, self.type_field)

    def class_kwargs(self) -> dict[str, Any]:
        """What the type's constructor receives: everything but the fields that only locate the class."""
        return self.model_dump(exclude={self.type_field, "module_path"}, exclude_none=True)


class TypeSpec(BaseModel):
    """Mixed into a built-in type's spec (after the kind's spec): its fields are all it accepts, and it can say, without
    loading anything heavy, whether its source can exist on this machine."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    implementation: ClassVar[str]  # "module:Class", imported only when an instance is created

    def offline_check(self) -> None:
        """Raise DefinitionError naming the field whose source cannot exist (a missing folder, an unknown
        architecture); must not use the network."""
        raise NotImplementedError


def check_path_exists(field: str, path: Path) -> None:
    if not path.exists():
        raise DefinitionError(f"field '{field}': {path} does not exist")


@dataclass(frozen=True)
class _Entry:
    spec: DefinitionSpec
    source: Path | None = None  # the JSON file, for messages; None for `register(...)` calls
    cls: type | None = None  # given directly by `register(...)`

    @property
    def origin(self) -> str:
        return str(self.source) if self.source else "a register call"


def call_setup(instance: Any, fields: dict[str, Any]) -> None:
    """Run `instance._setup(**fields)`, turning a definition field the type does not accept into one sentence."""
    import inspect

    parameters = inspect.signature(instance._setup).parameters.values()
    if not any(p.kind is p.VAR_KEYWORD for p in parameters):
        accepted = {p.name for p in parameters}
        unknown = sorted(set(fields) - accepted)
        if unknown:
            raise DefinitionError(
                f"{type(instance).__name__} '{instance.title}' does not accept the definition field(s) "
                f"{', '.join(repr(f) for f in unknown)}; remove them or check their spelling."
            )
    instance._setup(**fields)


def _import_string(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _import_file(path: Path) -> Any:
    module_name = f"tti_eval_user_{path.stem}_{abs(hash(path.resolve()))}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def _resolve_relative_paths(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A definition kept in git names its files relative to itself: `module_path` always, and any other field whose
    value starts with `./` or `../` (a local model directory, a checkpoint, a dataset folder). Anything else, such as
    a hub id, is left as written. Done on the text as written, before a path field's validation normalises `./` away."""
    return {
        field: str((folder / value).resolve())
        if isinstance(value, str) and (field == "module_path" or value.startswith(("./", "../")))
        else value
        for field, value in data.items()
    }


def _describe_validation_error(error: ValidationError, spec_type: type[BaseModel]) -> str:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "(root)"
    if first["type"] == "extra_forbidden":
        known = ", ".join(name for name in spec_type.model_fields if name not in DefinitionSpec.model_fields)
        return (
            f"field '{field}' is not one that {spec_type.__name__.removesuffix('Spec')} accepts "
            f"(its own fields: {known or 'none'}); remove it or check its spelling"
        )
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"field '{field}': {message}"


class DefinitionRegistry(Generic[T]):
    """Titles → validated definitions → instances, for one kind of thing ("model" or "dataset")."""

    def __init__(
        self,
        kind: str,
        spec_type: type[DefinitionSpec],
        base_class: str,
        builtin_types: Mapping[str, type[DefinitionSpec]],
    ):
        self.kind = kind
        self.spec_type = spec_type
        self._base_class = base_class
        self.builtin_types = dict(builtin_types)
        self._file_entries: dict[str, _Entry] = {}
        self._session_entries: dict[str, _Entry] = {}
        self._problems: list[str] = []
        self._loaded_from: tuple[tuple[Path, int], ...] | None = None

    # -- loading ----------------------------------------------------------------------------------------------------

    def source_folders(self) -> tuple[Path, ...]:
        """The built-in folder, then each `TTI_EVAL_SOURCES_PATH` folder in order (those that are folders)."""
        extra = [folder / f"{self.kind}s" for folder in get_settings().sources_paths if folder.is_dir()]
        return (builtin_sources_path() / f"{self.kind}s", *extra)

    def _sources_path_problems(self) -> list[str]:
        problems = []
        for folder in get_settings().sources_paths:
            if not folder.exists():
                problems.append(f"TTI_EVAL_SOURCES_PATH names {folder}, which does not exist; fix or remove it.")
            elif not folder.is_dir():
                problems.append(
                    f"TTI_EVAL_SOURCES_PATH names {folder}, which is a file; point it at a folder holding models/ "
                    "and datasets/."
                )
        return problems

    def _snapshot(self) -> tuple[tuple[Path, int], ...]:
        """Every definition file with its mtime: a file added, edited or removed in a running session is seen."""
        files = []
        for folder in self.source_folders():
            if folder.is_dir():
                files.extend(sorted(folder.glob("*.json"), key=lambda file: natural_key(file.name)))
        # A file that vanished or a dangling link gets mtime -1 and is reported by `_read_file`, not raised here.
        return tuple((file, file.stat().st_mtime_ns if file.exists() else -1) for file in files)

    def _ensure_loaded(self) -> None:
        snapshot = self._snapshot()
        if snapshot == self._loaded_from:
            return
        self._file_entries, self._problems = {}, []
        for file, _ in snapshot:
            try:
                entry = self._read_file(file)
            except DefinitionError as e:
                self._problems.append(str(e))  # shown by whoever lists `problems` (the CLI warns once per file)
                continue
            self._file_entries[entry.spec.title] = entry
        self._loaded_from = snapshot

    def _read_file(self, file: Path) -> _Entry:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise DefinitionError(f"{file}: cannot be read ({e}); fix or remove the file.") from None
        except json.JSONDecodeError as e:
            raise DefinitionError(f"{file}: not valid JSON ({e.msg} at line {e.lineno}); fix or remove it.") from None
        if not isinstance(data, dict):
            raise DefinitionError(f"{file}: must hold one JSON object describing a {self.kind}.")
        data = _resolve_relative_paths(data, file.parent)
        spec_type = self.spec_type if "module_path" in data else self.builtin_types.get(str(data.get(self.type_field)))
        try:
            spec = (spec_type or self.spec_type).model_validate(data)
        except ValidationError as e:
            raise DefinitionError(
                f"{file}: {_describe_validation_error(e, spec_type or self.spec_type)}; "
                f"see sources/{self.kind}-definition-schema.json."
            ) from None
        if spec.module_path is not None:
            if not spec.module_path.is_file():
                raise DefinitionError(f"{file}: field 'module_path': {spec.module_path} does not exist.")
        elif spec.type_name not in self.builtin_types:
            known = ", ".join(sorted(self.builtin_types))
            raise DefinitionError(
                f"{file}: field '{self.spec_type.type_field}': '{spec.type_name}' is not a built-in type ({known}); "
                "name a module_path that defines it."
            )
        if spec.title in self._file_entries:
            other = self._file_entries[spec.title].source
            raise DefinitionError(f"{file}: field 'title': '{spec.title}' is already defined in {other}.")
        return _Entry(spec=spec, source=file)

    # -- public API -------------------------------------------------------------------------------------------------

    @property
    def problems(self) -> list[str]:
        """One sentence per `TTI_EVAL_SOURCES_PATH` folder that is missing or a file, and per definition file that
        could not be loaded. The folders are checked on every call: the setting may change in a running session
        without any definition file changing."""
        self._ensure_loaded()
        return [*self._sources_path_problems(), *self._problems]

    @property
    def type_field(self) -> str:
        return self.spec_type.type_field

    def register(self, cls: type, title: str, **fields: Any) -> None:
        """Add a definition for this session; it takes precedence over a file with the same title. A built-in type's
        fields are checked as a file's would be."""
        data = {self.type_field: cls.__name__, "title": title, **fields}
        builtin = self.builtin_types.get(cls.__name__)
        spec_type = builtin if builtin and builtin.implementation == f"{cls.__module__}:{cls.__qualname__}" else None
        try:
            spec = (spec_type or self.spec_type).model_validate(data)
        except ValidationError as e:
            reason = _describe_validation_error(e, spec_type or self.spec_type)
            raise DefinitionError(f"Cannot register {self.kind} '{title}': {reason}.") from None
        self._check_subclass(cls, _Entry(spec=spec))
        self._session_entries[spec.title] = _Entry(spec=spec, cls=cls)

    def titles(self) -> list[str]:
        self._ensure_loaded()
        return sorted({*self._file_entries, *self._session_entries}, key=natural_key)

    def spec(self, title: str) -> DefinitionSpec:
        return self._entry(title).spec

    def source(self, title: str) -> Path | None:
        return self._entry(title).source

    def check(self, title: str) -> None:
        """The definition's offline check (its type's `offline_check`): raise a DefinitionError naming the file and
        field whose source cannot exist here. A type from a `module_path` is checked by importing its class."""
        entry = self._entry(title)
        if isinstance(entry.spec, TypeSpec):
            try:
                entry.spec.offline_check()
            except DefinitionError as e:
                raise DefinitionError(f"{entry.origin}: {str(e).rstrip('.')}; fix it in the definition.") from None
        else:
            self.get_class(title)

    def get_class(self, title: str) -> type[T]:
        entry = self._entry(title)
        cls = entry.cls or self._resolve_class(entry)
        self._check_subclass(cls, entry)
        return cls

    def create(self, title: str, **overrides: Any) -> T:
        return self.factory(title, **overrides)()

    def factory(self, title: str, **overrides: Any) -> Callable[[], T]:
        """A picklable call that creates the object anywhere, e.g. on a Ray worker that never saw a `register` call
        or the definition's JSON file."""
        entry = self._entry(title)
        kwargs = entry.spec.class_kwargs() | {k: v for k, v in overrides.items() if v is not None}
        return functools.partial(self.get_class(title), **kwargs)

    # -- helpers ----------------------------------------------------------------------------------------------------

    def _entry(self, title: str) -> _Entry:
        self._ensure_loaded()
        entry = self._session_entries.get(title) or self._file_entries.get(title)
        if entry is None:
            raise UnknownTitleError(self.unknown_title_message(title))
        return entry

    def unknown_title_message(self, title: str) -> str:
        see_all = f"Run `tti-eval list --all` to see every known {self.kind}."
        return " ".join(
            part for part in (f"Unknown {self.kind} '{title}'.", did_you_mean(title, self.titles()), see_all) if part
        )

    def _resolve_class(self, entry: _Entry) -> type:
        name = entry.spec.type_name
        if entry.spec.module_path is None:
            return _import_string(self.builtin_types[name].implementation)
        try:
            module = _import_file(entry.spec.module_path)
        except (Exception, SystemExit) as e:  # a module that exits or raises at import is a broken definition
            reason = f"it called sys.exit({e.code!r})" if isinstance(e, SystemExit) else f"{type(e).__name__}: {e}"
            raise DefinitionError(
                f"{entry.origin}: field 'module_path': importing {entry.spec.module_path} failed ({reason}); "
                "fix that module."
            ) from None
        cls = getattr(module, name, None)
        if cls is None:
            raise DefinitionError(
                f"{entry.origin}: field '{entry.spec.type_field}': {entry.spec.module_path} defines no class '{name}'."
            )
        return cls

    def _check_subclass(self, cls: Any, entry: _Entry) -> None:
        base = _import_string(self._base_class)
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise DefinitionError(
                f"{entry.origin}: field '{entry.spec.type_field}': {getattr(cls, '__name__', cls)!s} is not a "
                f"subclass of {base.__module__}.{base.__name__}."
            )
