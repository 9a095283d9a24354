"""Commands that need no model answer without importing the heavy libraries (times are in benchmarks/startup.py)."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "open_clip", "datasets", "faiss", "sklearn")


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["list"], ["list", "--all"], ["build", "-h"], ["--version"]])
def test_no_heavy_import(args, cache_path):
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom tti_eval.cli.main import app\n"
        f"result = CliRunner().invoke(app, {args!r})\nassert result.exit_code == 0, result.output\n"
        f"print(sorted(set({HEAVY!r}) & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
