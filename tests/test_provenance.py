"""Cache provenance: fingerprints, staleness and its explanations, split disclosure (issue #12 §2, §3)."""

import json
import os
import shutil
import zlib
from math import ceil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.fixtures.datasets import write_digits_tree
from tti_eval.cli.main import app
from tti_eval.common import EmbeddingDefinition, Split
from tti_eval.common.cache import embedding_path, load_embeddings, load_metadata
from tti_eval.common.errors import DefinitionError
from tti_eval.dataset import DatasetProvider
from tti_eval.provenance import file_stats, split_state

runner = CliRunner()
SPLITS = (Split.TRAIN, Split.VALIDATION)


def _invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def _define(sources: Path, kind: str, definition: dict) -> None:
    path = sources / f"{kind}s" / f"{definition['title']}.json"
    path.write_text(json.dumps(definition), encoding="utf-8")


@pytest.fixture
def tree_pair(tiny_models, test_sources_dir, cache_path, tmp_path, request):
    """A private digits tree (train and validation folders), its dataset definition and a built tiny-hf-clip pair."""
    root = tmp_path / "tree"
    write_digits_tree(root, {"train": 3, "validation": 2})
    title = f"prov-{zlib.crc32(request.node.name.encode()):08x}"  # short: rich would wrap the sentences tests read
    _define(
        test_sources_dir,
        "dataset",
        {"dataset_type": "ImageFolderDataset", "title": title, "title_in_source": str(root)},
    )
    pair = EmbeddingDefinition(model="tiny-hf-clip", dataset=title)
    result = _invoke("build", "-md", str(pair), "--num-workers", "0")
    assert result.exit_code == 0, result.output
    yield pair, root
    (test_sources_dir / "datasets" / f"{title}.json").unlink()


def _reasons(pair: EmbeddingDefinition, split: Split = Split.TRAIN) -> tuple[str, ...]:
    state = split_state(pair, split)
    assert state.status == ("stale" if state.reasons else "fresh")
    return state.reasons


def test_a_fresh_build_records_every_part_and_is_up_to_date(tree_pair):
    pair, root = tree_pair
    fingerprint = load_metadata(pair, Split.TRAIN)["fingerprint"]
    assert fingerprint["dataset"]["title_in_source"] == str(root) and fingerprint["model"]["model_type"] == "HFModel"
    assert fingerprint["split"] == {"split": "train", "from": "source"}
    assert set(fingerprint["versions"]) >= {"torch", "transformers"}
    # Image identity: every image of the tree by relative path, with the size and mtime that stat reports.
    files = fingerprint["image_files"]["paths"][str(root.resolve())]
    expected = {
        p.relative_to(root).as_posix(): [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(root.rglob("*.png"))
    }
    assert files == expected and len(files) == 50
    assert [_reasons(pair, s) for s in SPLITS] == [(), ()]
    result = _invoke("list")
    assert "up to date" in result.output and "stale" not in result.output


def test_changed_templates_make_both_splits_stale_and_build_rebuilds_them(tree_pair, test_sources_dir):
    pair, root = tree_pair
    stamps = [embedding_path(pair, s).stat().st_mtime_ns for s in SPLITS]
    definition = {"dataset_type": "ImageFolderDataset", "title": pair.dataset, "title_in_source": str(root)}
    _define(test_sources_dir, "dataset", definition | {"templates": ["a drawing of {}"]})
    assert [_reasons(pair, s) for s in SPLITS] == [("templates changed",)] * 2

    listed = _invoke("list")
    assert "stale (train: templates changed, validation: templates changed)" in listed.output
    evaluated = _invoke("evaluate", "-md", str(pair), "-e", "zero_shot")
    assert (
        f"The cached train and validation embeddings of {pair} are stale (templates changed); rebuild them with "
        f"`tti-eval build --model-dataset {pair}`."
    ) in evaluated.output.replace("\n", " ")

    result = _invoke("build", "-md", str(pair), "--num-workers", "0")
    assert result.exit_code == 0 and f"{pair} (train) is stale (templates changed); rebuilding it" in result.output
    assert all(embedding_path(pair, s).stat().st_mtime_ns != t for s, t in zip(SPLITS, stamps, strict=True))
    assert load_metadata(pair, Split.VALIDATION)["templates"] == ["a drawing of {}"]
    assert [_reasons(pair, s) for s in SPLITS] == [(), ()]
    assert "already cached" in _invoke("build", "-md", str(pair)).output


def test_images_added_removed_and_touched_are_counted(tree_pair):
    pair, root = tree_pair
    train = sorted((root / "train").rglob("*.png"))
    for i, source in enumerate(train[:2]):
        shutil.copy(source, source.with_name(f"new-{i}.png"))
    assert _reasons(pair) == ("2 images added",)
    train[5].unlink()
    os.utime(train[7], ns=(train[7].stat().st_atime_ns, train[7].stat().st_mtime_ns + 10**9))
    assert _reasons(pair) == ("2 images added, 1 removed, 1 modified",)
    (root / "train" / "notes.txt").write_text("not an image")  # only image files decide the split
    (root / "train" / ".hidden.png").write_bytes(b"editor litter")
    assert _reasons(pair) == ("2 images added, 1 removed, 1 modified",)

    result = _invoke("build", "-md", str(pair), "--num-workers", "0")
    assert "(train) is stale (2 images added, 1 removed, 1 modified); rebuilding it" in result.output
    assert load_embeddings(pair, Split.TRAIN).images.shape[0] == 30 + 2 - 1
    assert _reasons(pair) == ()


def test_a_replaced_model_checkpoint_makes_the_pair_stale(tiny_models, tree_pair, test_sources_dir, tmp_path):
    _, root = tree_pair
    model = dict(tiny_models["tiny-local-clip"].definition)
    checkpoint = tmp_path / "weights.pt"
    shutil.copy(model["checkpoint_path"], checkpoint)
    _define(test_sources_dir, "model", model | {"title": "prov-local-clip", "checkpoint_path": str(checkpoint)})
    pair = EmbeddingDefinition(model="prov-local-clip", dataset=tree_pair[0].dataset)
    try:
        assert _invoke("build", "-md", str(pair), "--num-workers", "0", "--split", "validation").exit_code == 0
        stored = load_metadata(pair, Split.VALIDATION)["fingerprint"]["model_files"]
        assert stored[str(checkpoint.resolve())] == {
            checkpoint.name: [checkpoint.stat().st_size, checkpoint.stat().st_mtime_ns]
        }
        assert _reasons(pair, Split.VALIDATION) == ()
        checkpoint.write_bytes(checkpoint.read_bytes() + b"\0")
        assert _reasons(pair, Split.VALIDATION) == ("1 model file modified",)
    finally:
        (test_sources_dir / "models" / "prov-local-clip.json").unlink()


def test_an_original_tool_cache_has_unknown_provenance_and_still_evaluates(tree_pair, test_sources_dir):
    pair, _ = tree_pair
    for split in SPLITS:  # rewrite both files the way the original tool did: the three arrays, no metadata
        embeddings = load_embeddings(pair, split)
        path = embedding_path(pair, split)
        np.savez(
            path, image_embeddings=embeddings.images, class_embeddings=embeddings.classes, labels=embeddings.labels
        )
    state = split_state(pair, Split.TRAIN)
    assert state.status == "unknown" and state.fingerprint is None
    assert "provenance unknown" in _invoke("list").output
    result = _invoke("evaluate", "-md", str(pair), "-e", "zero_shot")
    assert result.exit_code == 0 and "stale" not in result.output
    assert "already cached" in _invoke("build", "-md", str(pair)).output  # kept, not rebuilt behind the user's back


def test_a_removed_definition_leaves_provenance_unknown(tree_pair, test_sources_dir):
    pair, _ = tree_pair
    (test_sources_dir / "datasets" / f"{pair.dataset}.json").rename(test_sources_dir / f"{pair.dataset}.json.off")
    try:
        state = split_state(pair, Split.TRAIN)
        assert state.status == "unknown" and state.reasons == (f"dataset '{pair.dataset}' has no definition",)
        assert "provenance unknown" in _invoke("list").output
    finally:
        (test_sources_dir / f"{pair.dataset}.json.off").rename(test_sources_dir / "datasets" / f"{pair.dataset}.json")


def test_a_folder_without_validation_discloses_how_train_was_carved(
    tiny_models, test_sources_dir, cache_path, tmp_path
):
    root = tmp_path / "train-only"
    sizes = write_digits_tree(root, {"train": 4})
    _define(
        test_sources_dir,
        "dataset",
        {"dataset_type": "ImageFolderDataset", "title": "prov-carved", "title_in_source": str(root)},
    )
    pair = EmbeddingDefinition(model="tiny-hf-clip", dataset="prov-carved")
    try:
        result = _invoke("build", "-md", str(pair), "--num-workers", "0")
        assert result.exit_code == 0, result.output
        # Reference: 30 % held out of 40 (rounded up), halved again (rounded up) into test, the rest validation.
        held_out = ceil(0.3 * sizes["train"])
        test = ceil(0.5 * held_out)
        expected = {"train_images": 40, "train": 40 - held_out, "validation": held_out - test, "test": test}
        line = (
            f"carved from the source's 40 train images: {expected['validation']} to validation and {test} to test "
            f"(15 % each, seed 42), {expected['train']} kept for train"
        )
        assert f"{pair} (validation) {line}" in result.output.replace("\n", " ")
        metadata = load_metadata(pair, Split.VALIDATION)
        assert metadata["carving"] == expected and metadata["num_images"] == expected["validation"]
        assert metadata["fingerprint"]["split"]["missing"] == ["validation", "test"]
    finally:
        (test_sources_dir / "datasets" / "prov-carved.json").unlink()


def test_a_folder_with_train_and_validation_is_never_carved(tree_pair):
    pair, root = tree_pair
    train = DatasetProvider.get_dataset(pair.dataset, Split.TRAIN)
    assert len(train) == 30 and train.carving is None
    with pytest.raises(DefinitionError, match="no test folder"):
        DatasetProvider.get_dataset(pair.dataset, Split.TEST)
    result = _invoke("build", "-md", str(pair), "--split", "test")
    assert result.exit_code == 1 and "has train and validation folders but no test folder" in result.output


def test_file_stats_reads_sizes_and_mtimes_without_hidden_entries(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.JPG").write_bytes(b"123")
    (tmp_path / "a" / ".cache").mkdir()
    (tmp_path / "a" / ".cache" / "y.jpg").write_bytes(b"1")
    (tmp_path / "a" / "z.txt").write_bytes(b"12")
    stat = (tmp_path / "a" / "b" / "x.JPG").stat()
    assert file_stats(tmp_path / "a", {".jpg"}) == {"b/x.JPG": [3, stat.st_mtime_ns]}
    assert set(file_stats(tmp_path / "a")) == {"b/x.JPG", "z.txt"}
    assert file_stats(tmp_path / "missing") == {}


def test_model_types_name_the_files_their_weights_come_from(tmp_path, monkeypatch):
    from tti_eval.model.types import HFModel, LocalCLIPModel, OpenCLIPModel

    folder = tmp_path / "weights"
    folder.mkdir()
    assert HFModel.source_paths("m", str(folder), cache_dir=str(tmp_path)) == [folder]
    assert HFModel.source_paths("m", "openai/clip-vit-base-patch32") == []  # a hub id: its definition identifies it
    assert OpenCLIPModel.source_paths("m", f"local-dir:{folder}") == [folder]
    # LocalCLIPModel reads `<cache>/models/<title>/checkpoint.pt` unless the definition names a file.
    monkeypatch.setenv("TTI_EVAL_CACHE_PATH", str(tmp_path / "cache"))
    assert LocalCLIPModel.source_paths("mine", "ViT-B-32") == [tmp_path / "cache" / "models" / "mine" / "checkpoint.pt"]
    assert LocalCLIPModel.source_paths("mine", "ViT-B-32", cache_dir=str(folder)) == [folder / "checkpoint.pt"]


def test_draft_decoding_is_part_of_the_fingerprint_and_older_fingerprints_meant_full_decoding():
    from tti_eval.provenance import explain_changes

    older = {"model": {}, "dataset": {}}  # written before the option existed: every image was fully decoded
    assert explain_changes(older, {"draft_decode": False}) == []
    assert explain_changes(older, {"draft_decode": True}) == ["draft decoding switched on"]
    assert explain_changes({"draft_decode": True}, {"draft_decode": False}) == ["draft decoding switched off"]
    assert explain_changes({"draft_decode": True}, {}) == []  # readers cannot tell how a build decoded


def test_draft_builds_of_pillows_draft_mode_are_stale():
    from tti_eval.provenance import DRAFT_METHOD, explain_changes

    now = {"draft_decode": True, "draft_method": DRAFT_METHOD}
    assert explain_changes(now, now) == []
    # A draft build that recorded no method decoded with Pillow's 1/2, 1/4, 1/8 draft mode: other pixels.
    assert explain_changes({"draft_decode": True}, now) == [
        f"draft decoding changed (Pillow's 1/2, 1/4, 1/8 draft, sides >= twice the model's input -> {DRAFT_METHOD})"
    ]
    assert explain_changes({"draft_decode": False, "draft_method": None}, now) == ["draft decoding switched on"]
