"""Package attributes imported on first use, so that a light submodule can be imported without its heavy siblings."""

import importlib
from collections.abc import Callable, Mapping


def lazy_attributes(package: str, module_of: Mapping[str, str]) -> Callable[[str], object]:
    """A module-level `__getattr__` for `package` that imports `name` from the (relative) module `module_of[name]`;
    `tti-eval --help` and `list` stay free of numpy, pydantic and torch while `from package import name` works."""

    def __getattr__(name: str) -> object:
        if name not in module_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module_of[name], package), name)

    return __getattr__
