"""Atomic file writes, used by every writer of tti-eval's files (cache, checkpoints, downloads, results, charts).

A file is written under a temporary name in its own folder, flushed to disk and then renamed into place, so a reader
sees either the old file or the complete new one, never a half-written one. The temporary name carries the writer's
host and pid, so a later writer can tell the leftovers of a killed process (SIGKILL leaves no chance to clean up)
from a file another live process is still writing, and sweep only the former.
"""

import contextlib
import errno
import os
import re
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from .errors import TTIEvalError, WriteError

TEMP_SUFFIX = ".tmp"
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())
_TEMP_WRITER = re.compile(r"\.(?P<host>[A-Za-z0-9_-]*)@(?P<pid>\d+)@[0-9a-f]*\.tmp$")


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def _open_temp(path: Path) -> tuple[int, Path]:
    """Create a fresh temporary file beside `path`. Created with mode 0666 so the kernel applies the process umask
    itself (a team's shared cache stays as readable as any other file the user writes), without reading or changing
    the umask, which is process-wide state."""
    while True:
        temp = path.with_name(f"{_temp_prefix(path)}{_HOST}@{os.getpid()}@{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temp
        except FileExistsError:  # a random clash with another of our own writes; draw again
            continue


class _RecordingWriter:
    """The temporary file as `write` sees it: every call passes through, and an `OSError` of the file is remembered,
    because writers report it as something else (torch.save turns a full disk into "unexpected pos"), or it surfaces
    in a call that is not a write (a buffered file flushes when zipfile seeks back to a header)."""

    def __init__(self, file: BinaryIO):
        self._file = file
        self.error: OSError | None = None

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._file, name)
        if not callable(attribute):
            return attribute

        def recorded(*args: Any, **kwargs: Any) -> Any:
            try:
                return attribute(*args, **kwargs)
            except OSError as e:
                self.error = e
                raise

        return recorded


def _remedy(path: Path) -> str:
    """What moves files like `path` elsewhere: the setting whose folder holds it, when one does."""
    from .settings import get_settings

    try:
        settings = get_settings()
    except TTIEvalError:
        return "choose another folder"
    for variable, root in (
        ("TTI_EVAL_CACHE_PATH", settings.cache_path),
        ("TTI_EVAL_OUTPUT_PATH", settings.output_path),
    ):
        if path.resolve().is_relative_to(root.resolve()):
            return f"point {variable} elsewhere"
    return "choose another folder"


def write_error(error: OSError, path: Path, what: str | None = None) -> WriteError:
    """The one sentence for a failed write of `path` (`what` names it to the user; default its file name): what went
    wrong where, and what to do."""
    folder, remedy, what = path.parent, _remedy(path), what or path.name
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return WriteError(f"No space left on the disk of {folder} while writing {what}; free space or {remedy}.")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return WriteError(
            f"{folder} is not writable ({error.strerror}), so {what} cannot be written; make it writable or {remedy}."
        )
    if error.errno in (errno.ENOTDIR, errno.EEXIST):
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), folder)
        return WriteError(f"{blocker} is a file where a folder is needed to write {what}; move it or {remedy}.")
    return WriteError(f"{path} could not be written ({error.strerror or error}); check the disk or {remedy}.")


def check_writable(folder: Path, what: str) -> None:
    """Fail now, in one sentence, when `what` could not be written into `folder` (created if missing), so that a
    long computation does not end in a result that cannot be kept. A few bytes are written, so a full disk shows."""
    probe = Path(folder) / f".tti-eval-write-check@{os.getpid()}"
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with open(probe, "wb") as handle:
            handle.write(b"tti-eval")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as e:
        raise write_error(e, probe, what) from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[BinaryIO], object], reported_as: Path | None = None) -> Path:
    """Call `write(file)` on a temporary file beside `path`, then move it into place in one step; return `path`.

    On any failure (an exception in `write`, a full disk, Ctrl-C) the temporary file is removed and `path` is left as
    it was; a failure to write the file itself (not, say, a download that `write` reads from) is a `WriteError`
    sentence, about `reported_as` when given (the file the user knows, of which `path` is a part, e.g. a shard).
    Stale temporaries of the same target left by dead writers are swept first."""
    path = Path(path)
    reported = Path(reported_as or path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(path.parent, target=path.name)
        fd, temp = _open_temp(path)
    except OSError as e:
        raise write_error(e, reported) from None
    file = os.fdopen(fd, "wb")
    recorder = _RecordingWriter(file)
    try:
        try:
            write(recorder)
        except Exception:
            if recorder.error is None:
                raise
            raise write_error(recorder.error, reported) from None
        try:
            file.flush()
            os.fsync(file.fileno())
            file.close()
            os.replace(temp, path)
        except OSError as e:
            raise write_error(e, reported) from None
    except BaseException:
        with contextlib.suppress(OSError):
            file.close()  # its buffer may still fail to flush on a full disk
        temp.unlink(missing_ok=True)
        raise
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_stale_temp_files(folder: Path, target: str | None = None) -> None:
    """Delete temporary files in `folder` (only those of `target`, if given) whose writer died before renaming them.

    Only this host's writers are judged: on a shared (network) cache another host's pid means nothing here."""
    if not folder.is_dir():
        return
    pattern = f"{_temp_prefix(Path(target))}*{TEMP_SUFFIX}" if target else f".*{TEMP_SUFFIX}"
    for temp in folder.glob(pattern):
        writer = _TEMP_WRITER.search(temp.name)
        if writer and writer["host"] == _HOST and not _pid_alive(int(writer["pid"])):
            temp.unlink(missing_ok=True)
