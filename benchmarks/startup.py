"""Start-up times: median of 5 runs of a bare typer + rich program and of tti-eval's light commands, as JSON.

python benchmarks/startup.py
"""

import json
import statistics
import subprocess
import sys
import time

CASES = {
    "bare typer+rich": [sys.executable, "-c", "import typer, rich.console"],
    "--help": [sys.executable, "-m", "tti_eval.cli.main", "--help"],
    "list": [sys.executable, "-m", "tti_eval.cli.main", "list"],
    "list --all": [sys.executable, "-m", "tti_eval.cli.main", "list", "--all"],
}


def median_seconds(command: list[str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 3)


if __name__ == "__main__":
    print(json.dumps({name: median_seconds(command) for name, command in CASES.items()}, indent=2))
