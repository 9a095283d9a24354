"""User-facing errors.

Anything a user can cause (a typo in a title, a missing cache file, a bad definition) raises a subclass of
`TTIEvalError` whose message is one sentence that says what to do. The CLI prints exactly that sentence and
exits non-zero; everything else is a bug and keeps its traceback.
"""


class TTIEvalError(Exception):
    """An error the user can fix; its message is shown as is."""


class UnknownTitleError(TTIEvalError, KeyError):
    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class DefinitionError(TTIEvalError):
    """A model or dataset definition (JSON file or `register_*` call) is unusable."""


class CacheError(TTIEvalError):
    """Embeddings are missing from the cache, or a cached file cannot be read."""


class InvalidEmbeddingsError(TTIEvalError, ValueError):
    """Embeddings have the wrong shape, or contain zero or non-finite vectors."""


class WriteError(TTIEvalError):
    """A file could not be written: a full disk, a read-only folder, a file where a folder should be."""
