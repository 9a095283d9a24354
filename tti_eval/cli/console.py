"""Terminal output shared by the commands, and the rule that user errors end in one sentence, not a traceback."""

import contextlib
import functools
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import typer
from rich.console import Console

from tti_eval.common.errors import TTIEvalError

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.table import Table

    from tti_eval.common.progress import Display

console = Console()
DEBUG = False  # set by the global --debug option: errors keep their traceback instead of becoming one line
err_console = Console(stderr=True)

INTERRUPTED = "Interrupted; finished files are kept and a rerun picks up where this one stopped."

P = ParamSpec("P")
R = TypeVar("R")


# Libraries that print through a handler of their own yet also pass each record up to the root logger.
_SELF_PRINTING_LOGGERS = ("huggingface_hub", "datasets")


def configure_logging() -> None:
    """Print every log line once, through rich on stderr: tti-eval's own lines (e.g. "training digits-clip first")
    and the warnings of the libraries it drives.

    Lines used to print twice because open_clip logs through the root logger with `logging.info(...)`, which makes
    `logging.basicConfig()` give root a plain handler; from then on every record that huggingface_hub or datasets
    printed with their own handler was printed again by root's. Root therefore gets rich's handler before any
    library logs (so basicConfig leaves it alone), and those libraries keep only their own handler."""
    from rich.logging import RichHandler

    def rich_handler() -> RichHandler:
        return RichHandler(console=err_console, show_time=False, show_path=False, markup=False)

    logger = logging.getLogger("tti_eval")
    if not any(isinstance(h, RichHandler) for h in logger.handlers):
        logger.addHandler(rich_handler())
        logger.setLevel(logging.INFO)
        logger.propagate = False
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(rich_handler())
    for name in _SELF_PRINTING_LOGGERS:
        logging.getLogger(name).propagate = False


# Set before the libraries are imported (inside the commands), which read them once: their bars would otherwise draw
# over tti-eval's one display, or fill a notebook cell with redraws. Our display shows what they were doing.
_LIBRARY_PROGRESS_SWITCHES = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}


def silence_library_progress_bars() -> None:
    """Turn off huggingface_hub's, transformers' and datasets' own progress bars, unless the user chose otherwise."""
    for name, value in _LIBRARY_PROGRESS_SWITCHES.items():
        os.environ.setdefault(name, value)


@contextlib.contextmanager
def progress_display() -> "Iterator[Display]":
    """The command's one progress display, on stderr beside the log lines and warnings, so that on a terminal rich
    prints those above the bars rather than through them; plain lines where stderr is not a terminal. Print through
    the display while it runs."""
    from tti_eval.common.progress import display_for, showing

    with showing(display_for(err_console)) as display:
        yield display


def titled(table: "Table", title: str, caption: str = "") -> "RenderableType":
    """`table` under `title` (rich markup) and over `caption` (plain text), both wrapped at the console's width: rich
    wraps a table's own title and caption at the table's width, which broke a one-line title over a narrow table."""
    from rich.console import Group
    from rich.text import Text

    parts: list[RenderableType] = [Text.from_markup(title, style="table.title"), table]
    if caption:
        parts.append(Text(caption, style="table.caption"))
    return Group(*parts)


def fits(table: "Table", width: int) -> bool:
    """Whether every cell of `table` fits on one line within `width` columns."""
    from rich.measure import Measurement

    # measured with room to spare: a measurement never exceeds the width it is given
    return Measurement.get(console, console.options.update_width(10 * width), table).maximum <= width


def stacked(cells: Sequence[str]) -> list[str]:
    """Cells such as `0.9042 [0.8991, 0.9093]` or `p (Holm)` broken before the bracket, for a table too narrow to
    show them on one line: the interval goes under its value instead of being cut."""
    return [cell.replace(" [", "\n[").replace(" (", "\n(") for cell in cells]


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(f"[bold red]Error:[/] {message}", highlight=False)
    return typer.Exit(code)


def warn(message: str) -> None:
    err_console.print(f"[yellow]Warning:[/] {message}", highlight=False)


def user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a `TTIEvalError` into its sentence and exit code 1, and Ctrl-C into a short note and exit code 130."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except TTIEvalError as e:
            if DEBUG:
                raise
            raise fail(str(e)) from None
        except KeyboardInterrupt as e:  # a build's interruption says what a rerun will redo
            raise fail(str(e) or INTERRUPTED, 130) from None

    return wrapper


def interrupt_exits_130_from_now_on() -> None:
    """Once a command has returned, only click's ending and the interpreter's shutdown (atexit handlers, worker and
    thread clean-up) are left, where a KeyboardInterrupt would die silently or as a traceback: a Ctrl-C from here on
    ends the process at once with the usual note and exit code 130. Only the real entry point calls this; it changes
    a process-wide handler."""

    def interrupted(signum: int, frame: object) -> None:
        err_console.print(f"[bold red]Error:[/] {INTERRUPTED}", highlight=False)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(130)

    signal.signal(signal.SIGINT, interrupted)
