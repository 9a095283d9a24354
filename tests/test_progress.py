"""Progress fits where it runs: a few plain lines without a terminal (notebook cells, CI logs, pipes), one live display
on a terminal that log lines and warnings print above, never through."""

import io
import logging
import os
import random
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from rich.console import Console
from rich.logging import RichHandler
from typer.testing import CliRunner

from tests.terminal import screen
from tti_eval.cli import console as console_module
from tti_eval.cli.main import app
from tti_eval.common.progress import Display, LiveDisplay, PlainDisplay, Task, display_for, showing, task
from tti_eval.dataset import DatasetProvider
from tti_eval.dataset.types.image_folder import ImageFolderDataset

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# What another library's tqdm bar leaves in a log: "Loading weights:  40%|####      | 2/5 [00:01<00:02, 1.50it/s]"
TQDM = re.compile(r"\d+%\||it/s\]|s/it\]")
# Terminal settings a developer's shell or a notebook kernel may export; the runs below are plain pipes.
TERMINAL_VARIABLES = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "CLICOLOR_FORCE", "COLUMNS")


class FakeTerminal(io.StringIO):
    """A stream that says it is a TTY, so rich draws live displays into it as into a terminal."""

    def isatty(self) -> bool:
        return True


def test_plain_display_prints_a_start_line_one_per_tenth_and_a_closing_speed():
    out = io.StringIO()
    display = PlainDisplay(Console(file=out, width=30, _environ={}))  # narrow: lines must not wrap
    total, done, steps = 1000, 0, random.Random(0)
    expected = ["a/b (train): 1,000 images"]
    with task_on(display, "a/b (train)", total) as running:
        while done < total:
            before, done = done, min(total, done + steps.randint(1, 70))
            running.update(done)
            if done < total and 10 * done // total > 10 * before // total:  # another tenth passed
                expected.append(f"a/b (train): {100 * done // total} % ({done:,}/{total:,})")
    lines = out.getvalue().splitlines()
    assert lines[:-1] == expected
    assert re.fullmatch(r"a/b \(train\): done, 1,000 images in [\d.]+ s \([\d,.]+ img/s\)", lines[-1]), lines[-1]
    assert len(lines) <= 12 and "\r" not in out.getvalue() and not ANSI.search(out.getvalue())


@contextmanager
def task_on(display: Display, description: str, total: int) -> Iterator[Task]:
    """`task` on a given display, as a command's display hosts the tasks that library code opens."""
    with showing(display), task(description, total) as running:
        yield running


def test_a_task_that_stops_early_prints_no_closing_line():
    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt), task_on(PlainDisplay(Console(file=out, _environ={})), "x", 10) as running:
        running.update(5)
        raise KeyboardInterrupt
    assert out.getvalue().splitlines() == ["x: 10 images", "x: 50 % (5/10)"]


def test_bars_are_live_only_on_a_real_terminal(monkeypatch):
    monkeypatch.delenv("JPY_PARENT_PID", raising=False)
    # Jupyter exports FORCE_COLOR=1 to `!` commands: rich then calls a pipe a terminal, but nothing there can redraw.
    assert isinstance(display_for(Console(file=io.StringIO(), _environ={"FORCE_COLOR": "1"})), PlainDisplay)
    assert isinstance(display_for(Console(file=io.StringIO(), _environ={})), PlainDisplay)
    assert isinstance(display_for(Console(file=FakeTerminal(), _environ={})), LiveDisplay)
    assert isinstance(display_for(Console(file=FakeTerminal(), _environ={"TERM": "dumb"})), PlainDisplay)
    # ... and runs them under a pseudo-terminal whose every redraw the cell keeps
    monkeypatch.setenv("JPY_PARENT_PID", "1")
    assert isinstance(display_for(Console(file=FakeTerminal(), _environ={})), PlainDisplay)


@pytest.fixture(scope="module")
def sources(tiny_models, digits_tree):
    return tiny_models, digits_tree


def test_build_and_evaluate_print_a_few_plain_lines_without_a_terminal(sources, cache_path: Path, output_path: Path):
    """A build through transformers and datasets (whose own bars must stay silent), read as a notebook cell or a CI
    log reads it: a handful of lines per split, no carriage returns, no escape codes, and paths never broken across
    lines by the 80 columns rich assumes there."""
    env = {k: v for k, v in os.environ.items() if k not in TERMINAL_VARIABLES}
    code = "import sys; from tti_eval.cli.main import cli; sys.argv = ['tti-eval', *sys.argv[1:]]; cli()"
    pair = "tiny-hf-clip/digits-tree-hf"

    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    built = run("build", "-md", pair, "--batch-size", "4", "--num-workers", "0")
    for split, images in (("train", 200), ("validation", 80)):
        lines = [line for line in built.splitlines() if f"({split})" in line]
        assert 4 <= len(lines) <= 15, built
        assert re.search(rf"\({split}\): done, {images} images in [\d.]+ s \([\d,.]+ img/s\)", built), built
    evaluated = run("evaluate", "-md", pair, "-e", "wKNN", "-e", "zero_shot", "--save")
    (saved,) = re.findall(r"^Saved the scores to (.+)$", evaluated, flags=re.MULTILINE)
    assert Path(saved).is_file() and len(f"Saved the scores to {saved}") > 80
    assert len([line for line in evaluated.splitlines() if line.startswith("Evaluating")]) <= 12, evaluated
    for output in (built, evaluated):
        assert "\r" not in output and not ANSI.search(output) and not TQDM.search(output), output
    assert len(built.splitlines()) <= 40, built


class LoggingDigits(ImageFolderDataset):
    """The digits tree, logging a warning half-way through a split, as a library might while images are read."""

    def get_image_and_label(self, index: int):
        if index == len(self) // 2:
            logging.getLogger("tti_eval.test").warning("image %d looks odd", index)
        return super().get_image_and_label(index)


def test_log_lines_print_above_the_live_bars_not_through_them(sources, cache_path: Path, monkeypatch):
    """stdout and stderr on one terminal, as in a shell: the warning logged while a bar is drawn ends up on its own
    line, and once the (transient) bars are gone nothing of them is left on screen."""
    _, tree = sources
    monkeypatch.delenv("JPY_PARENT_PID", raising=False)  # when the suite itself runs in a notebook
    DatasetProvider.register_dataset(LoggingDigits, "logging-digits", title_in_source=str(tree.root))
    terminal = FakeTerminal()
    for name in ("console", "err_console"):
        monkeypatch.setattr(console_module, name, Console(file=terminal, width=100, _environ={}))
    monkeypatch.setattr("tti_eval.cli.main.console", console_module.console)
    console_module.configure_logging()
    handler = next(h for h in logging.getLogger("tti_eval").handlers if isinstance(h, RichHandler))
    monkeypatch.setattr(handler, "console", console_module.err_console)

    args = ["build", "-md", "tiny-hf-clip/logging-digits", "--batch-size", "4", "--num-workers", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output

    raw = terminal.getvalue()
    assert "━" in raw  # bars were drawn live
    shown = [line for line in screen(raw) if line]
    warnings = [line for line in shown if "looks odd" in line]
    assert [re.sub(r"\s+", " ", line) for line in warnings] == [
        "WARNING image 100 looks odd",
        "WARNING image 40 looks odd",
    ], shown
    assert not any("━" in line for line in shown), shown
    assert [line for line in shown if line.startswith("✓")] == [
        "✓ tiny-hf-clip/logging-digits (train) built",
        "✓ tiny-hf-clip/logging-digits (validation) built",
    ], shown
