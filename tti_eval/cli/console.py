"""Terminal output shared by the commands, and the rule that user errors end in one sentence, not a traceback."""

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console

from tti_eval.common.errors import TTIEvalError

console = Console()
err_console = Console(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


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
        except KeyboardInterrupt:
            raise fail(
                "Interrupted; finished files are kept and a rerun picks up where this one stopped.", 130
            ) from None

    return wrapper
