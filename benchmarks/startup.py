"""Start-up times: median wall and CPU time of 5 runs of each case (taking turns), as JSON, with the load average.

Baselines are bare typer + rich programs: importing both (the first figure this benchmark ever reported), a
two-command app printing its `--help`, the same app running a command that prints a rich table (which, like any
typer command, imports pydantic to check its options) and printing that command's help. `ratio_cpu` divides each
tti-eval case by the baseline that does the same kind of work (`--help` by the bare `--help`, `build -h` by the bare
command's help, the commands by the bare command), in CPU time, which a busy machine disturbs far less than wall time.

tti-eval runs as its `tti-eval` script does (`cli()`; `python -m tti_eval.cli.main` would run the CLI module twice,
once as `__main__`), and every program runs from bytecode, written to a temporary cache by one untimed round first:
so an installed package runs, whereas with PYTHONDONTWRITEBYTECODE set (as on the project's shared machines) a
checkout's tti_eval would be compiled from source on every run while typer, rich and pydantic load pip's bytecode.

tti-eval runs against a temporary cache holding one built pair (digits-clip-random/digits: offline, built before the
timing starts), so `list` checks a real split's provenance and `build (cached)` has a pair to find already cached;
`list (empty cache)` points at a folder that holds none. `first picker` runs `build` in a pseudo-terminal until its
picker is drawn (its wall time ends there; its CPU time includes the Ctrl-C that closes it).

    python benchmarks/startup.py
"""

import json
import os
import pty
import resource
import select
import statistics
import subprocess
import sys
import tempfile
import time

BARE_APP = """
import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(rich_markup_mode="rich", add_completion=False)


@app.command()
def show(wide: bool = False) -> None:
    \"\"\"Print a table.\"\"\"
    table = Table("A", "B")
    table.add_row("1", "2")
    Console().print(table)


@app.command()
def other(count: int = 1) -> None:
    \"\"\"Do nothing.\"\"\"


app()
"""
PAIR = "digits-clip-random/digits"
TTI_EVAL = [sys.executable, "-c", "from tti_eval.cli.main import cli; cli()"]  # what the `tti-eval` script runs
CASES = {
    "bare typer+rich (import)": [sys.executable, "-c", "import typer, rich.console"],
    "bare typer+rich --help": [sys.executable, "-c", BARE_APP, "--help"],
    "bare typer+rich command": [sys.executable, "-c", BARE_APP, "show"],
    "bare typer+rich command -h": [sys.executable, "-c", BARE_APP, "show", "--help"],
    "--help": [*TTI_EVAL, "--help"],
    "build -h": [*TTI_EVAL, "build", "-h"],
    "list (empty cache)": ["env", "TTI_EVAL_CACHE_PATH={cache}/empty", *TTI_EVAL, "list"],
    "list": [*TTI_EVAL, "list"],
    "list --all": [*TTI_EVAL, "list", "--all"],
    "build (cached)": [*TTI_EVAL, "build", "-md", PAIR],
    "first picker": [*TTI_EVAL, "build"],
}
# Cases timed until this text is on the terminal (then Ctrl-C ends them): a picker waits for keys, not for an exit.
DRAWN = {"first picker": b"Pick model/dataset pairs"}
# every other tti-eval case runs a command
BASELINE_OF = {"--help": "bare typer+rich --help", "build -h": "bare typer+rich command -h"}


def _child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(command: list[str], env: dict[str, str], drawn: bytes | None) -> float:
    """Wall seconds until `command` exits, or until it has drawn `drawn` on its terminal."""
    start = time.perf_counter()
    if drawn is None:
        subprocess.run(command, capture_output=True, check=True, env=env)
        return time.perf_counter() - start
    main_side, terminal = pty.openpty()
    process = subprocess.Popen(command, stdin=terminal, stdout=terminal, stderr=terminal, env=env)
    os.close(terminal)
    shown, deadline = b"", time.monotonic() + 120
    while drawn not in shown:
        ready, _, _ = select.select([main_side], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            process.kill()
            raise TimeoutError(f"{' '.join(command)} never showed {drawn!r}; it showed {shown[-500:]!r}")
        shown += os.read(main_side, 1 << 16)
    seconds = time.perf_counter() - start
    os.write(main_side, b"\x03")
    process.wait(timeout=60)
    os.close(main_side)
    return seconds


def median_seconds(cases: dict[str, list[str]], env: dict[str, str], runs: int = 5) -> dict[str, dict[str, float]]:
    """Each case's median wall time and CPU time (user + system of the process). The cases take turns, so a change in
    the machine's load touches them alike; CPU time barely depends on how many others share the cores."""
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in cases}
    for _ in range(runs):
        for name, command in cases.items():
            cpu = _child_cpu_seconds()
            times[name]["wall"].append(_run(command, env, DRAWN.get(name)))
            times[name]["cpu"].append(_child_cpu_seconds() - cpu)
    return {
        clock: {name: round(statistics.median(found[clock]), 3) for name, found in times.items()}
        for clock in ("wall", "cpu")
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as bytecode:
        env = {**os.environ, "TTI_EVAL_CACHE_PATH": cache, "HF_HUB_OFFLINE": "1"}
        subprocess.run([*TTI_EVAL, "build", "-md", PAIR], capture_output=True, check=True, env=env)
        env = {name: value for name, value in env.items() if name != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = bytecode
        cases = {name: [part.format(cache=cache) for part in command] for name, command in CASES.items()}
        median_seconds(cases, env, runs=1)  # writes the bytecode
        load_before = os.getloadavg()
        seconds = median_seconds(cases, env)
        load_after = os.getloadavg()
    ratio = {  # by CPU time: wall times on a shared machine mostly measure the others
        name: round(seconds["cpu"][name] / seconds["cpu"][BASELINE_OF.get(name, "bare typer+rich command")], 2)
        for name in CASES
        if not name.startswith("bare")
    }
    load = {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]}
    report = {"wall_seconds": seconds["wall"], "cpu_seconds": seconds["cpu"], "ratio_cpu": ratio, "load_average": load}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
