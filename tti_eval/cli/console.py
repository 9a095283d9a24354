"""Terminal output shared by the commands, and the rule that user errors end in one sentence, not a traceback."""

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console

from tti_eval.common.errors import TTIEvalError

console = Console()
err_console = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


def configure_logging() -> None:
    """Show tti-eval's own log lines (e.g. "training digits-clip first") through rich on stderr, once.

    The logger does not propagate, so the root handler that a library may install cannot print them a second time
    in the plain `WARNING:tti_eval:` form."""
    from rich.logging import RichHandler

    logger = logging.getLogger("tti_eval")
    if not any(isinstance(h, RichHandler) for h in logger.handlers):
        logger.addHandler(RichHandler(console=err_console, show_time=False, show_path=False, markup=False))
        logger.setLevel(logging.INFO)
        logger.propagate = False


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
            raise fail(str(e)) from None
        except KeyboardInterrupt as e:  # a build's interruption says what a rerun will redo
            raise fail(
                str(e) or "Interrupted; finished files are kept and a rerun picks up where this one stopped.", 130
            ) from None

    return wrapper
