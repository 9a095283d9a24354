"""An unreachable hub: one sentence per model or dataset, naming the offline way, with no retries and no doubled lines.

The hub is a loopback port that refuses connections (HF_ENDPOINT), and HF_HUB_OFFLINE is unset only in the
subprocess, so nothing here can reach a network.
"""

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tti_eval.common.errors import TTIEvalError

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")

HUB_MODELS = {
    "hub-hf": {"model_type": "HFModel", "title_in_source": "tti-eval-nobody/hf-model"},
    "hub-openclip": {"model_type": "OpenCLIPModel", "title_in_source": "hf-hub:tti-eval-nobody/openclip-model"},
    "hub-openclip-tag": {"model_type": "OpenCLIPModel", "title_in_source": "ViT-B-32", "pretrained": "laion2b_e16"},
}


@pytest.fixture
def refused_endpoint() -> Iterator[str]:
    """A loopback address whose port is held by this process but not listening, so every connection is refused."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{held.getsockname()[1]}"


def _write_definitions(root: Path) -> None:
    (root / "models").mkdir(parents=True)
    (root / "datasets").mkdir()
    for title, definition in HUB_MODELS.items():
        (root / "models" / f"{title}.json").write_text(json.dumps({"title": title, **definition}))
    hub_dataset = {"dataset_type": "HFDataset", "title": "hub-images", "title_in_source": "tti-eval-nobody/images"}
    (root / "datasets" / "hub-images.json").write_text(json.dumps(hub_dataset))


def test_build_with_an_unreachable_hub_says_once_per_model_how_to_work_offline(
    tmp_path: Path, refused_endpoint: str
) -> None:
    _write_definitions(tmp_path / "sources")
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_VARIABLES}
    env.update(HF_ENDPOINT=refused_endpoint, TTI_EVAL_SOURCES_PATH=str(tmp_path / "sources"), COLUMNS="400")
    # Two pairs for one hub model: the model is still asked for once, and its sentence is not repeated by a retry.
    pairs = ["hub-hf/digits", "hub-openclip/digits", "hub-openclip-tag/digits", "digits-clip-random/hub-images"]
    args = [arg for pair in pairs for arg in ("-md", pair)]
    code = "import sys; from tti_eval.cli.main import cli; sys.argv = ['tti-eval', *sys.argv[1:]]; cli()"
    result = subprocess.run(
        [sys.executable, "-c", code, "build", *args], env=env, capture_output=True, text=True, timeout=600
    )
    output = result.stdout + result.stderr

    assert result.returncode == 1, output
    assert "Traceback" not in output and "Retrying" not in output, output
    sentences = [line for line in output.splitlines() if "cannot be reached" in line]
    who = ["Model 'hub-hf'", "Model 'hub-openclip'", "Model 'hub-openclip-tag'", "Dataset 'hub-images'"]
    assert [next(w for w in who if w in line) for line in sentences] == who, output
    for line in sentences:
        assert refused_endpoint in line and "HF_HUB_OFFLINE=1" in line and "local path" in line, line
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == len(set(lines)), output


class _NotFound(BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def answering_endpoint() -> Iterator[str]:
    """A loopback hub that answers every request with 404: reachable, though it has nothing."""
    server = HTTPServer(("127.0.0.1", 0), _NotFound)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def hub_constants(monkeypatch: pytest.MonkeyPatch) -> Iterator:
    from huggingface_hub import constants

    from tti_eval.common import hub

    hub._hub_answers.cache_clear()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    yield constants
    hub._hub_answers.cache_clear()


def test_require_hub_raises_only_when_the_hub_does_not_answer(
    hub_constants, monkeypatch: pytest.MonkeyPatch, refused_endpoint: str, answering_endpoint: str
) -> None:
    from tti_eval.common.hub import require_hub

    monkeypatch.setattr(hub_constants, "ENDPOINT", answering_endpoint)
    require_hub("Model 'm'", "org/m")  # an error status is still an answer

    monkeypatch.setattr(hub_constants, "ENDPOINT", refused_endpoint)
    with pytest.raises(TTIEvalError, match=r"^Model 'm': the Hugging Face hub at .* cannot be reached, so 'org/m'"):
        require_hub("Model 'm'", "org/m")

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    require_hub("Model 'm'", "org/m")  # offline: the caches answer, the hub is not asked


def test_library_log_lines_print_once_after_open_clip_logs_through_root() -> None:
    """open_clip's `logging.info` gives root a handler (basicConfig); hub and datasets lines then printed twice."""
    code = (
        "import logging, huggingface_hub, datasets\n"
        "from tti_eval.cli.console import configure_logging\n"
        "configure_logging()\n"
        "logging.info('Parsing model identifier')\n"  # what open_clip does while loading a model
        "logging.getLogger('huggingface_hub.utils._http').warning('hub-retry-line')\n"
        "logging.getLogger('datasets.load').warning('datasets-line')\n"
        "logging.getLogger('tti_eval').warning('own-line')\n"
        "logging.warning('root-line')\n"
    )
    env = {**os.environ, "COLUMNS": "400"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for text in ("hub-retry-line", "datasets-line", "own-line", "root-line"):
        assert result.stderr.count(text) == 1, result.stderr
    assert "WARNING:root:" not in result.stderr, result.stderr  # basicConfig's plain form: rich prints them all
