"""Atomic file writes, used by every writer of tti-eval's files (cache, checkpoints, downloads, results, charts).

A file is written under a temporary name in its own folder, flushed to disk and then renamed into place, so a reader
sees either the old file or the complete new one, never a half-written one. The temporary name carries the writer's
host and pid, so a later writer can tell the leftovers of a killed process (SIGKILL leaves no chance to clean up)
from a file another live process is still writing, and sweep only the former.
"""

import os
import re
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

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


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call `write(file)` on a temporary file beside `path`, then move it into place in one step; return `path`.

    On any failure (an exception in `write`, a full disk, Ctrl-C) the temporary file is removed and `path` is left as
    it was. Stale temporaries of the same target left by dead writers are swept first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent, target=path.name)
    fd, temp = _open_temp(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
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
