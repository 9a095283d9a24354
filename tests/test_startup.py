"""Commands that need no model answer without importing the heavy libraries (times are in benchmarks/startup.py)."""

import importlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from tti_eval.cli.main import app
from tti_eval.common import EmbeddingDefinition, Split
from tti_eval.common.cache import array_shapes, embedding_path, load_embeddings, load_metadata, save_embeddings
from tti_eval.common.errors import CacheError
from tti_eval.dataset.spec import HFDatasetSpec
from tti_eval.dataset.types.hugging_face import HFDataset
from tti_eval.provenance import (
    DRAFT_METHOD,
    build_fingerprint,
    kept_as_cached,
    package_versions,
    pairs_kept_as_cached,
)

HEAVY = ("torch", "transformers", "open_clip", "datasets", "faiss", "sklearn")
# The top-level help needs neither numpy nor pydantic; typer itself imports pydantic once a command parses its options
# (its help included: a bare typer program's does too), so only numpy stays out of those.
LIGHT_HELP = (*HEAVY, "numpy", "pydantic")
LIGHT_COMMAND = (*HEAVY, "numpy")
PAIR = EmbeddingDefinition(model="tiny-openclip", dataset="digits-tree")
HUB_PAIR = EmbeddingDefinition(model="hub-clip", dataset="hub-images")
HUB_DEFINITIONS = {
    "models": {"model_type": "HFModel", "title": HUB_PAIR.model, "title_in_source": "tti-eval-nobody/hub-clip"},
    "datasets": {"dataset_type": "HFDataset", "title": HUB_PAIR.dataset, "title_in_source": "tti-eval-nobody/images"},
}


def imported_by(args: list[str], absent: tuple[str, ...]) -> tuple[list[str], str]:
    """The modules of `absent` that running `tti-eval ARGS` in a fresh interpreter imported, and its output."""
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom tti_eval.cli.main import app\n"
        f"result = CliRunner().invoke(app, {args!r})\nassert result.exit_code == 0, result.output\n"
        f"print(result.output)\nprint(sorted(set({absent!r}) & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    *output, modules = done.stdout.strip().splitlines()
    return eval(modules), "\n".join(output)


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["--version"]])
def test_help_imports_neither_numpy_nor_pydantic(args, cache_path):
    assert imported_by(args, LIGHT_HELP)[0] == []


@pytest.mark.parametrize("args", [["build", "-h"], ["evaluate", "-h"], ["list"], ["list", "--all"]])
def test_commands_help_and_list_of_an_empty_cache_import_no_numpy(args, cache_path):
    assert imported_by(args, LIGHT_COMMAND)[0] == []


@pytest.fixture(scope="module")
def cached(tiny_models, digits_tree, tmp_path_factory):
    """tiny-openclip's train and validation embeddings of the digits tree, in a cache of this module's own."""
    cache = tmp_path_factory.mktemp("startup-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TTI_EVAL_CACHE_PATH", str(cache))
        result = CliRunner().invoke(app, ["build", "-md", str(PAIR), "--num-workers", "0"])
        assert result.exit_code == 0, result.output
    return cache


@pytest.fixture
def cache(cached, monkeypatch):
    monkeypatch.setenv("TTI_EVAL_CACHE_PATH", str(cached))
    return cached


def test_list_of_a_cache_checks_provenance_without_numpy(cache):
    modules, output = imported_by(["list"], LIGHT_COMMAND)
    assert modules == []
    assert "tiny-openclip" in output and "up to date" in output


def test_building_a_cached_pair_loads_nothing(cache):
    modules, output = imported_by(["build", "-md", str(PAIR)], LIGHT_COMMAND)
    assert modules == []
    assert f"{PAIR} (train) already cached" in output and f"{PAIR} (validation) already cached" in output


def test_a_split_is_kept_without_loading_only_when_no_check_needs_its_dataset(cache, tmp_path, monkeypatch):
    assert pairs_kept_as_cached([PAIR], [Split.TRAIN, Split.VALIDATION]) == [PAIR]
    assert not kept_as_cached(PAIR, Split.VALIDATION, draft_decode=True)  # decoded otherwise: stale
    assert not kept_as_cached(PAIR, Split.TEST)  # not built

    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    monkeypatch.setenv("TTI_EVAL_CACHE_PATH", str(copy))
    # A source only its type can check (a hub dataset's fingerprint, Encord's label versions) needs the dataset.
    metadata = load_metadata(PAIR, Split.TRAIN)
    metadata["fingerprint"]["images"] = {"fingerprints": ["abc"]}
    save_embeddings(PAIR, load_embeddings(PAIR, Split.TRAIN), Split.TRAIN, metadata)
    assert not kept_as_cached(PAIR, Split.TRAIN) and kept_as_cached(PAIR, Split.VALIDATION)
    assert pairs_kept_as_cached([PAIR], [Split.TRAIN, Split.VALIDATION]) == []
    path = embedding_path(PAIR, Split.VALIDATION)
    path.write_bytes(path.read_bytes()[:500])  # truncated: rebuilt
    assert not kept_as_cached(PAIR, Split.VALIDATION)


def test_a_draft_split_is_kept_only_when_decoded_the_current_draft_way(cache, tmp_path, monkeypatch):
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    monkeypatch.setenv("TTI_EVAL_CACHE_PATH", str(copy))
    metadata = load_metadata(PAIR, Split.TRAIN)
    metadata["fingerprint"] |= {"draft_decode": True, "draft_method": DRAFT_METHOD}
    save_embeddings(PAIR, load_embeddings(PAIR, Split.TRAIN), Split.TRAIN, metadata)
    assert kept_as_cached(PAIR, Split.TRAIN, draft_decode=True) and not kept_as_cached(PAIR, Split.TRAIN)
    del metadata["fingerprint"]["draft_method"]  # a draft build from Pillow's draft mode
    save_embeddings(PAIR, load_embeddings(PAIR, Split.TRAIN), Split.TRAIN, metadata)
    assert not kept_as_cached(PAIR, Split.TRAIN, draft_decode=True)


@pytest.fixture
def hub_cache(cache, test_sources_dir, tmp_path, monkeypatch):
    """A copy of `cache` that also holds PAIR's embeddings under a pair whose definitions name hub repositories, with
    the fingerprint a build from the hub records (a `datasets` fingerprint of each split). No hub is ever reached."""
    for kind, definition in HUB_DEFINITIONS.items():
        (test_sources_dir / kind / f"{definition['title']}.json").write_text(json.dumps(definition))
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    monkeypatch.setenv("TTI_EVAL_CACHE_PATH", str(copy))
    for split in (Split.TRAIN, Split.VALIDATION):
        loaded_from_hub = SimpleNamespace(  # what build_fingerprint reads of a hub HFDataset split
            image_suffixes=HFDataset.image_suffixes,
            source_paths=list,
            source_identity=lambda split=split: {"fingerprints": {split.value: "5f1d0c2b9a7e4d3c"}},
            split_rule={"split": split.value, "from": "source"},
        )
        metadata = {**load_metadata(PAIR, split), "fingerprint": build_fingerprint(HUB_PAIR, loaded_from_hub)}
        save_embeddings(HUB_PAIR, load_embeddings(PAIR, split), split, metadata)
    yield copy
    for kind, definition in HUB_DEFINITIONS.items():
        (test_sources_dir / kind / f"{definition['title']}.json").unlink()


def test_building_a_cached_hub_pair_offline_loads_nothing(hub_cache):
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # set for the session; the subprocess inherits it
    modules, output = imported_by(["build", "-md", str(HUB_PAIR)], HEAVY)
    assert modules == []
    assert f"{HUB_PAIR} (train) already cached" in output and f"{HUB_PAIR} (validation) already cached" in output


def test_a_hub_dataset_is_opened_to_recheck_its_fingerprint_only_online(hub_cache, monkeypatch):
    from huggingface_hub import constants

    splits = [Split.TRAIN, Split.VALIDATION]
    assert pairs_kept_as_cached([HUB_PAIR], splits) == [HUB_PAIR]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the hub may have moved on: only `datasets` can tell
    assert pairs_kept_as_cached([HUB_PAIR], splits) == []
    # A local folder is checked by its files' stats, never by a `datasets` fingerprint, even offline.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    local = HFDatasetSpec.model_validate({**HUB_DEFINITIONS["datasets"], "title_in_source": str(hub_cache)})
    assert not local.source_identity_is_pinned()


def test_package_versions_are_importlib_metadata_versions():
    import importlib.metadata

    names = sorted({dist.metadata["Name"] for dist in importlib.metadata.distributions()})
    assert len(names) > 50  # the whole environment: torch, numpy, pydantic, ...
    assert package_versions((*names, "no-such-package")) == {name: importlib.metadata.version(name) for name in names}


def _zip_of_npy(path, arrays: dict[str, np.ndarray], version: tuple[int, int] | None) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, array, version=version, allow_pickle=False)


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
@pytest.mark.parametrize("byte_order", ["<", ">"])
def test_headers_and_metadata_are_read_as_numpy_reads_them(cache_path, version, byte_order):
    pair = EmbeddingDefinition(model="m", dataset="d")
    path = embedding_path(pair, Split.TRAIN)
    path.parent.mkdir(parents=True)
    text = json.dumps({"class_names": ["ünïcode", "🙂"], "n": 3})
    arrays = {
        "image_embeddings": np.ones((3, 5), dtype=f"{byte_order}f4"),
        "labels": np.arange(3),
        "metadata": np.array(text).astype(f"{byte_order}U{len(text) + 4}"),  # NUL-padded, as wider dtypes are
    }
    _zip_of_npy(path, arrays, version)
    with np.load(path, allow_pickle=False) as reference:
        assert array_shapes(pair, Split.TRAIN) == {name: reference[name].shape for name in reference.files}
        assert load_metadata(pair, Split.TRAIN) == json.loads(str(reference["metadata"]))


def test_metadata_that_is_not_one_string_gets_one_sentence(cache_path):
    pair = EmbeddingDefinition(model="m", dataset="d")
    path = embedding_path(pair, Split.TRAIN)
    path.parent.mkdir(parents=True)
    _zip_of_npy(path, {"image_embeddings": np.ones((1, 2)), "labels": np.zeros(1), "metadata": np.zeros(2)}, None)
    with pytest.raises(CacheError, match="has unreadable metadata"):
        load_metadata(pair, Split.TRAIN)


def test_help_text_matches_the_declarations():
    from tti_eval.cli.help_text import (
        ANIMATION_FRAMES,
        DEFAULT_REDUCTION,
        EVALUATOR_DESCRIPTIONS,
        LINEAR_PROBE_DEFAULTS,
        REDUCTIONS,
    )
    from tti_eval.evaluation import EVALUATORS, LinearProbeClassifier
    from tti_eval.plotting import animation, reduction

    # Compared as sets: a test that replaces a built-in re-registers it last.
    builtin = {t: e.spec.description for t, e in EVALUATORS.items() if e.__module__.startswith("tti_eval.")}
    assert builtin == EVALUATOR_DESCRIPTIONS
    defaults = LinearProbeClassifier.get_default_params()
    assert {name: defaults[name] for name in LINEAR_PROBE_DEFAULTS} == LINEAR_PROBE_DEFAULTS
    assert {t for t, r in reduction.REDUCERS.items() if r.__module__ == reduction.__name__} == set(REDUCTIONS)
    assert DEFAULT_REDUCTION == reduction.DEFAULT_REDUCTION
    assert ANIMATION_FRAMES == animation.NUM_FRAMES


@pytest.mark.parametrize("package", ["tti_eval", "tti_eval.common", "tti_eval.dataset", "tti_eval.model"])
def test_lazy_packages_give_every_public_name_and_refuse_others(package):
    module = importlib.import_module(package)
    for name in getattr(module, "__all__", ["__version__"]):
        assert getattr(module, name) is not None
    with pytest.raises(AttributeError, match="no_such_name"):
        module.no_such_name  # noqa: B018
