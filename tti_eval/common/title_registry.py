"""A small typed registry of things known by title (evaluators, 2-D reductions), the one "did you mean" helper that
every lookup by title uses, the definition registries included, and the natural order titles are listed in.

Titles are matched case-insensitively, so `-e wknn` finds `wKNN`; two titles that differ only in case are a duplicate,
and the error names both places that registered them, so a plugin that collides with a built-in is found at once.
"""

import difflib
import inspect
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Generic, TypeVar

from .errors import TTIEvalError, UnknownTitleError

T = TypeVar("T")


class DuplicateTitleError(TTIEvalError, ValueError):
    """Two entries of one registry share a title."""


def did_you_mean(title: str, known: Iterable[str], n: int = 3) -> str:
    """`Did you mean 'a' or 'b'?` for the known titles closest to `title` (case-insensitive), or "" when none is
    close; the sentence to append to an unknown-title message."""
    by_lower = {t.lower(): t for t in known}
    close = [by_lower[t] for t in difflib.get_close_matches(title.lower(), list(by_lower), n=n, cutoff=0.5)]
    return f"Did you mean {' or '.join(repr(t) for t in close)}?" if close else ""


_DIGITS = re.compile(r"(\d+)")


def natural_key(title: str) -> tuple[str | int, ...]:
    """Sort key for natural, case-insensitive order: `clip-2` before `clip-10`, `b` between `A` and `C`. Text and
    numbers alternate, text first (maybe empty), so two keys always compare text with text and number with number.
    Our own few lines rather than natsort, whose import cost about as much CPU time as the rest of `tti-eval list`'s
    own modules."""
    return tuple(int(part) if i % 2 else part for i, part in enumerate(_DIGITS.split(title.casefold())))


def _origin_of(entry: object) -> str:
    """Where an entry was defined, for error messages: `module.name (file:line)` when Python knows it."""
    name = f"{getattr(entry, '__module__', '?')}.{getattr(entry, '__qualname__', type(entry).__qualname__)}"
    try:
        return f"{name} ({inspect.getsourcefile(entry)}:{inspect.getsourcelines(entry)[1]})"
    except (TypeError, OSError):  # built in, or defined where no source file exists (an interactive session)
        return name


class TitleRegistry(Mapping[str, T], Generic[T]):
    """Entries by title, in registration order; a read-only mapping, so `list(registry)` gives the titles."""

    def __init__(self, kind: str) -> None:
        self.kind = kind  # what an entry is, in messages: "evaluator", "reduction"
        self._entries: dict[str, T] = {}

    def register(self, title: str, entry: T) -> T:
        """Add `entry` under `title`; a title already taken (in any letter case) raises `DuplicateTitleError`."""
        taken = next((known for known in self._entries if known.lower() == title.lower()), None)
        if taken is not None:
            raise DuplicateTitleError(
                f"Two {self.kind}s are titled '{title}': {_origin_of(self._entries[taken])} and {_origin_of(entry)}; "
                "rename one of them."
            )
        self._entries[title] = entry
        return entry

    def unregister(self, title: str) -> T:
        """Remove and return an entry (a notebook replacing its own experiment)."""
        return self._entries.pop(self.canonical_title(title))

    def get_entry(self, title: str) -> T:
        """The entry titled `title` in any letter case; an unknown title suggests the closest known ones."""
        return self._entries[self.canonical_title(title)]

    def canonical_title(self, title: str) -> str:
        """The registered spelling of `title` (matched in any letter case); an unknown title suggests close ones."""
        for known in self._entries:
            if known.lower() == title.lower():
                return known
        hint = did_you_mean(title, self._entries) or f"Choose from {', '.join(self._entries)}."
        raise UnknownTitleError(f"Unknown {self.kind} '{title}'. {hint}")

    def __getitem__(self, title: str) -> T:
        return self.get_entry(title)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
