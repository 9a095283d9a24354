"""Size of an executed quickstart notebook, as JSON: the whole file, its pictures, and its text outputs (lines,
lines redrawn in place and escape codes, which is where progress redrawn into a notebook shows).

The notebook runs offline in a fresh kernel of this environment with a fresh cache and output folder, the way
tests/test_notebooks.py runs it (so `digits-clip` is trained on the way). Run from the repository root:

python benchmarks/notebook_size.py [NOTEBOOK_NAME] [--keep PATH]
"""

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

import nbformat  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

from tests.test_notebooks import (  # noqa: E402
    CELL_TIMEOUT_S,
    NOTEBOOKS_PATH,
    fail_on_shell_errors,
    kernel_environment,
    this_interpreters_kernel,
)


def executed(name: str, root: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOKS_PATH / name, as_version=4)
    fail_on_shell_errors(notebook)
    for folder in ("work", "temp", "cache"):
        (root / folder).mkdir()
    client = NotebookClient(
        notebook,
        km=this_interpreters_kernel(),
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(root / "work")}},
    )
    client.execute(env=kernel_environment(root / "cache", root / "output", root / "temp"))
    return notebook


def sizes(notebook: nbformat.NotebookNode) -> dict[str, int]:
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    text = "".join(output.get("text", "") for output in outputs)
    pictures = [
        data for output in outputs for mime, data in output.get("data", {}).items() if mime.startswith("image/")
    ]
    return {
        "bytes": len(nbformat.writes(notebook).encode()),
        "picture_bytes": sum(len(data) for data in pictures),  # base64, as stored
        "text_bytes": len(text.encode()),
        "text_lines": text.count("\n"),
        # a carriage return not ending a line (a `!` command's pseudo-terminal ends each with one) redraws it
        "redraws": len(re.findall(r"\r(?!\n)", text)),
        "escape_codes": text.count("\x1b"),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", nargs="?", default="tti_eval_CLI_Quickstart.ipynb")
    parser.add_argument("--keep", type=Path, help="also write the executed notebook here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        notebook = executed(args.notebook, Path(root))
    if args.keep:
        nbformat.write(notebook, args.keep)
    print(json.dumps({"notebook": args.notebook, **sizes(notebook)}, indent=2))
