"""Progress that fits where it runs: one live display on a terminal, a few plain lines anywhere else.

A live display (bars redrawn in place) only makes sense on a real terminal. Written into a notebook cell, a CI log or
a pipe, each redraw becomes another line with carriage returns and escape codes. A notebook's `!` commands even run
under a pseudo-terminal, with `FORCE_COLOR=1` (one `build` cell once produced 3,084 lines). So a display is live only
on a TTY outside a notebook; elsewhere each task prints a start line, a line per tenth done and a closing line with
its speed.

Library code (training the demo model, downloading Encord images) reports through `task(...)`: inside a command the
bars join the command's one display, so two live displays never fight over the screen; outside one, a display is
opened just for that task.
"""

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from rich.console import Console

PLAIN_STEPS = 10  # a plain line each time another tenth of a task is done
NOTEBOOK_MARK = "JPY_PARENT_PID"  # set by jupyter_client for every kernel it starts


def is_live_terminal(console: Console) -> bool:
    """Whether `console` writes to a terminal a person watches: rich's own test (which honours `FORCE_COLOR` and
    `TTY_INTERACTIVE`), a stream that really is a TTY, and not a notebook's `!` command, which runs under a
    pseudo-terminal whose every redraw the notebook keeps (its kernel's children inherit `JPY_PARENT_PID`)."""
    if NOTEBOOK_MARK in os.environ:
        return False
    isatty = getattr(console.file, "isatty", None)
    try:
        return console.is_interactive and isatty is not None and isatty()
    except ValueError:  # a closed stream
        return False


class Task:
    """One unit of work with a known `total` (or None: a spinner and the time taken), drawn by its display."""

    def __init__(self, display: "Display", description: str, total: int | None, unit: str, completed: int) -> None:
        self.display, self.description, self.total, self.unit = display, description, total, unit
        self.started, self.first, self.completed, self.note = time.monotonic(), completed, completed, ""

    def update(self, completed: int, note: str = "") -> None:
        """Set how much is done; `note` (e.g. the loss) is shown beside the count."""
        before, self.completed, self.note = self.completed, completed, note
        self.display._moved(self, before)

    def advance(self, amount: int = 1, note: str = "") -> None:
        self.update(self.completed + amount, note)

    def count(self) -> str:
        """Done out of the total, e.g. "128/1,257", or nothing while the total is unknown."""
        return f"{self.completed:,}/{self.total:,}" if self.total is not None else ""

    def summary(self) -> str:
        """The closing line: how much was done in how long, and at what speed when the unit is images."""
        seconds = time.monotonic() - self.started
        if self.total is None:
            return f"{self.description}: done in {seconds:.1f} s"
        done = self.completed - self.first  # resumed work does not count towards this run's speed
        speed = f" ({done / seconds:,.1f} img/s)" if self.unit == "images" and seconds > 0 and done else ""
        note = f", {self.note}" if self.note else ""
        return f"{self.description}: done, {done:,} {self.unit} in {seconds:.1f} s{speed}{note}"


class Display:
    """Where tasks are drawn and lines printed while they run; `print` is the console's, so that on a terminal the
    lines appear above the live bars instead of through them."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def print(self, *objects: object, **kwargs: object) -> None:
        self.console.print(*objects, **kwargs)

    def plain(self, line: str) -> None:
        """A line of tti-eval's own text: no markup, no highlighting, never wrapped."""
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def task(self, description: str, total: int | None, unit: str = "images", completed: int = 0) -> Task:
        return Task(self, description, total, unit, completed)

    def finish(self, task: Task, keep: bool = False) -> None:
        """The task is done; `keep`: leave its closing line on screen even where bars vanish."""

    def drop(self, task: Task) -> None:
        """The task stopped before it was done."""

    def _moved(self, task: Task, before: int) -> None:
        raise NotImplementedError

    def __enter__(self) -> "Display":
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class PlainDisplay(Display):
    """For notebooks, logs and pipes: a start line, a line each tenth, a closing line; nothing is redrawn."""

    def task(self, description: str, total: int | None, unit: str = "images", completed: int = 0) -> Task:
        task = super().task(description, total, unit, completed)
        if total is None:
            self.plain(f"{description} …")
        else:
            resumed = f", {completed:,} of them done before" if completed else ""
            self.plain(f"{description}: {total:,} {unit}{resumed}")
        return task

    def _moved(self, task: Task, before: int) -> None:
        if not task.total or task.completed >= task.total:  # the closing line says it
            return
        if _tenths(before, task.total) < _tenths(task.completed, task.total):
            note = f", {task.note}" if task.note else ""
            percent = 100 * task.completed // task.total
            self.plain(f"{task.description}: {percent} % ({task.count()}{note})")

    def finish(self, task: Task, keep: bool = False) -> None:
        self.plain(task.summary())


def _tenths(done: int, total: int) -> int:
    return PLAIN_STEPS * done // total


class LiveDisplay(Display):
    """For a terminal: one rich `Progress`, transient, holding a bar per running task."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        super().__init__(console)
        self.progress = Progress(
            SpinnerColumn(finished_text=" "),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[count]}"),  # done/total, or nothing for a task of unknown length
            TextColumn("{task.fields[speed]}", style="progress.data.speed"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.ids: dict[int, int] = {}

    def task(self, description: str, total: int | None, unit: str = "images", completed: int = 0) -> Task:
        task = super().task(description, total, unit, completed)
        self.ids[id(task)] = self.progress.add_task(
            description, total=total, completed=completed, speed="", count=task.count()
        )
        return task

    def _moved(self, task: Task, before: int) -> None:
        seconds = time.monotonic() - task.started
        done = task.completed - task.first
        if task.unit == "images":
            speed = f"{done / seconds:,.1f} img/s" if done and seconds > 0 else "… img/s"
        else:
            speed = task.note
        self.progress.update(self.ids[id(task)], completed=task.completed, speed=speed, count=task.count())

    def finish(self, task: Task, keep: bool = False) -> None:
        self.drop(task)
        if keep:
            self.plain(task.summary())

    def drop(self, task: Task) -> None:
        self.progress.remove_task(self.ids.pop(id(task)))

    def __enter__(self) -> "LiveDisplay":
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()


def display_for(console: Console) -> Display:
    """A live display on a terminal, plain lines elsewhere."""
    return LiveDisplay(console) if is_live_terminal(console) else PlainDisplay(console)


_current: ContextVar[Display | None] = ContextVar("tti_eval_progress_display", default=None)


@contextmanager
def showing(display: Display) -> Iterator[Display]:
    """Run `display` (live bars start and end with it) and make it the one that `task` reports to meanwhile."""
    token = _current.set(display)
    try:
        with display:
            yield display
    finally:
        _current.reset(token)


@contextmanager
def task(description: str, total: int | None, unit: str = "images", keep: bool = False) -> Iterator[Task]:
    """A task on the current display, or on a display of rich's console opened for it; `keep`: its closing line
    stays on screen (e.g. as the record that a model was trained here)."""
    display = _current.get()
    if display is None:
        from rich import get_console

        with showing(display_for(get_console())), task(description, total, unit, keep) as running:
            yield running
        return
    running = display.task(description, total, unit)
    try:
        yield running
    except BaseException:
        display.drop(running)  # no closing line: it did not finish
        raise
    display.finish(running, keep)
