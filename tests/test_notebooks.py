"""The quickstarts in notebooks/ run top to bottom offline, and are committed without outputs.

Each notebook runs in a fresh kernel on this interpreter (the project's environment), in its own working directory
and output folder. All of them share one cache, so `digits-clip` is trained once for the module, not per notebook.
"""

import os
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

NOTEBOOKS_PATH = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_PATH.glob("*.ipynb"))
# rich erasing a line to redraw it: a notebook keeps every frame of a live display (its `!` commands run under a
# pseudo-terminal), so commands must print plain progress lines there.
ERASE_LINE = "\x1b[2K"
CELL_TIMEOUT_S = 300  # generous: the first cell that loads digits-clip trains it
# What each quickstart must show inline, beyond running without errors: the charts and animations it promises.
SHOWN_IMAGES = {
    "tti_eval_CLI_Quickstart.ipynb": {"image/png", "image/gif"},
    "tti_eval_Python_Quickstart.ipynb": {"image/png", "image/gif"},
    "tti_eval_Bring_Your_Own_Model_From_Hugging_Face_Quickstart.ipynb": set(),
    "tti_eval_Bring_Your_Own_Dataset_Quickstart.ipynb": set(),
}


@pytest.fixture(scope="module")
def notebook_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("notebook-cache")


def this_interpreters_kernel() -> AsyncKernelManager:
    """A `python3` kernel on `sys.executable`: ipykernel's built-in spec, ignoring any `python3` kernel installed for
    the user or the system, which may belong to another Python."""
    specs = KernelSpecManager(kernel_dirs=[], ensure_native_kernel=True)
    return AsyncKernelManager(kernel_name="python3", kernel_spec_manager=specs)


def kernel_environment(cache: Path, output: Path, temp: Path) -> dict[str, str]:
    """The test session's (offline) environment, with this environment's scripts (`tti-eval`) first on PATH, and
    the notebooks' temporary folders (the stand-in model, the image folder) under `temp`, which pytest cleans up."""
    scripts = str(Path(sys.executable).parent)  # not resolved: a venv's python is a symlink out of the venv
    return {
        **os.environ,
        "PATH": os.pathsep.join([scripts, os.environ.get("PATH", "")]),
        "TTI_EVAL_CACHE_PATH": str(cache),
        "TTI_EVAL_OUTPUT_PATH": str(output),
        "TMPDIR": str(temp),
        # One torch thread, as in the test process: on a busy machine two threads fighting over two cores made
        # embedding the digits 20 times slower.
        "OMP_NUM_THREADS": "1",
    }


def fail_on_shell_errors(notebook: nbformat.NotebookNode) -> None:
    """Follow every `!command` line with a check of its exit status: IPython only records it in `_exit_code`, so
    a failing `tti-eval` would otherwise let the notebook carry on as if it had worked."""
    for cell in notebook.cells:
        if cell.cell_type == "code":
            lines = []
            for line in cell.source.splitlines():
                lines.append(line)
                if line.startswith("!"):
                    lines.append(f"assert _exit_code == 0, {line[1:]!r} + ' failed'")
            cell.source = "\n".join(lines)


def test_every_quickstart_is_there():
    assert {path.name for path in NOTEBOOKS} == set(SHOWN_IMAGES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_runs_offline(path: Path, notebook_cache: Path, tmp_path: Path):
    notebook = nbformat.read(path, as_version=4)
    fail_on_shell_errors(notebook)
    workdir, temp = tmp_path / "work", tmp_path / "temp"
    workdir.mkdir()
    temp.mkdir()
    client = NotebookClient(
        notebook,
        km=this_interpreters_kernel(),
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute(env=kernel_environment(notebook_cache, tmp_path / "output", temp))  # a failing cell raises here

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    shown = {mime for output in outputs for mime in output.get("data", {}) if mime.startswith("image/")}
    assert SHOWN_IMAGES[path.name] <= shown
    text = "".join(output.get("text", "") for output in outputs)
    assert ERASE_LINE not in text, text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_committed_without_outputs(path: Path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"run nbstripout on {path.name}"
