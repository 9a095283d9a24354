"""Test session set-up: no network, a private cache, one thread per test process.

The environment is set before anything imports transformers, datasets or huggingface_hub, because they read it at
import time.
"""

import os
import shutil
import tempfile
from pathlib import Path

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="tti-eval-tests-"))
os.environ.update(
    HF_HUB_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    HF_HOME=str(_SESSION_DIR / "hf-home"),
    TTI_EVAL_CACHE_PATH=str(_SESSION_DIR / "cache"),
    TTI_EVAL_OUTPUT_PATH=str(_SESSION_DIR / "output"),
    TOKENIZERS_PARALLELISM="false",
    MPLBACKEND="Agg",
    COLUMNS="200",  # rich would wrap messages at 80 columns and split the sentences tests look for
)
os.environ.pop("TTI_EVAL_SOURCES_PATH", None)
os.environ.pop("ENCORD_SSH_KEY_PATH", None)

import pytest  # noqa: E402

pytest_plugins = ["tests.fixtures.models", "tests.fixtures.datasets"]


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(1)  # two shared cores: threads would only fight each other


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR


@pytest.fixture
def cache_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty cache for one test."""
    path = tmp_path / "cache"
    monkeypatch.setenv("TTI_EVAL_CACHE_PATH", str(path))
    return path


@pytest.fixture
def output_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "output"
    monkeypatch.setenv("TTI_EVAL_OUTPUT_PATH", str(path))
    return path


@pytest.fixture(scope="session")
def test_sources_dir() -> Path:
    """A team sources folder (`models/`, `datasets/`) that fixtures fill with JSON definitions of tiny local models
    and datasets. It is exported as TTI_EVAL_SOURCES_PATH for the whole session, so subprocesses (e.g. a build that a
    test kills) find the same definitions through the same code path users hit."""
    path = _SESSION_DIR / "sources"
    (path / "models").mkdir(parents=True, exist_ok=True)
    (path / "datasets").mkdir(parents=True, exist_ok=True)
    os.environ["TTI_EVAL_SOURCES_PATH"] = str(path)
    return path
