"""Resumable splits: a build interrupted in the middle of a split resumes from its finished shards."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from tti_eval.cli.main import app
from tti_eval.common import EmbeddingDefinition, Embeddings, Split
from tti_eval.common.cache import embedding_path, load_metadata, save_embeddings_streamed
from tti_eval.compute import (
    BuildInterrupted,
    BuildProgress,
    build_embeddings,
    build_pairs,
    compute_embeddings,
    shard_store,
)
from tti_eval.dataset import DatasetProvider
from tti_eval.dataset.types.image_folder import ImageFolderDataset
from tti_eval.model import ModelProvider
from tti_eval.shards import ShardStore

SHARD, BATCH = 16, 8
PAIR = EmbeddingDefinition(model="tiny-openclip", dataset="digits-tree")


@pytest.fixture(scope="module")
def model(tiny_models, digits_tree):
    return ModelProvider.get_model(PAIR.model)


class ForwardPasses:
    """Counts the images the model embeds, and raises KeyboardInterrupt (as Ctrl-C would) at a chosen batch."""

    def __init__(self, model, monkeypatch: pytest.MonkeyPatch, interrupt_at_batch: int | None = None):
        self.images, self.batches = 0, 0
        real = model.embed_images

        def embed_images(pixel_values):
            if self.batches == interrupt_at_batch:
                raise KeyboardInterrupt
            self.batches += 1
            self.images += len(pixel_values)
            return real(pixel_values)

        monkeypatch.setattr(model, "embed_images", embed_images)


def _build(model, pair: EmbeddingDefinition = PAIR, **options):
    options = {"batch_size": BATCH, "num_workers": 0, "shard_size": SHARD, **options}
    return build_embeddings(pair, [Split.TRAIN], load_model=lambda: model, **options)[Split.TRAIN]


def _shards_folder(pair: EmbeddingDefinition = PAIR):
    path = embedding_path(pair, Split.TRAIN)
    return path.with_name(f".{path.stem}.shards")


def test_an_interrupted_split_resumes_from_its_finished_shards(model, cache_path, monkeypatch):
    total = len(DatasetProvider.get_dataset(PAIR.dataset, Split.TRAIN))
    with monkeypatch.context() as patch:
        ForwardPasses(model, patch, interrupt_at_batch=5)  # 5 batches of 8 = 2 whole shards of 16 and half a third
        with pytest.raises(BuildInterrupted) as interrupted:
            _build(model)
    assert f"32 of {total} train images" in str(interrupted.value) and f"the other {total - 32}" in str(
        interrupted.value
    )
    assert not embedding_path(PAIR, Split.TRAIN).exists()

    passes = ForwardPasses(model, monkeypatch)
    resumed = _build(model)
    assert passes.images == total - 32
    assert not _shards_folder().exists() and not list(embedding_path(PAIR, Split.TRAIN).parent.glob(".*"))

    # The reference: the whole split embedded in one pass in memory, with nothing cached.
    dataset = DatasetProvider.get_dataset(PAIR.dataset, Split.TRAIN)
    reference = compute_embeddings(model, dataset, batch_size=BATCH, num_workers=0)
    np.testing.assert_allclose(resumed.images, reference.images, atol=1e-6)
    np.testing.assert_array_equal(resumed.labels, reference.labels)
    np.testing.assert_allclose(resumed.classes, reference.classes, atol=1e-6)
    metadata = load_metadata(PAIR, Split.TRAIN)
    assert metadata["num_images"] == total and metadata["dim"] == reference.images.shape[1]


def test_shards_of_another_definition_are_not_reused(model, digits_tree, cache_path, tmp_path, monkeypatch):
    """The same title pointing at different images (here: the digits mirrored) must not pick up the old shards."""
    mirrored = tmp_path / "mirrored"
    shutil.copytree(digits_tree.root, mirrored)
    for file in mirrored.rglob("*.png"):
        ImageOps.mirror(Image.open(file)).save(file)
    pair = EmbeddingDefinition(model=PAIR.model, dataset="shards-digits")
    DatasetProvider.register_dataset(ImageFolderDataset, pair.dataset, title_in_source=str(digits_tree.root))
    with monkeypatch.context() as patch:
        ForwardPasses(model, patch, interrupt_at_batch=4)
        with pytest.raises(BuildInterrupted):
            _build(model, pair)
    assert len(list(_shards_folder(pair).glob("shard-*.npz"))) == 2

    DatasetProvider.register_dataset(ImageFolderDataset, pair.dataset, title_in_source=str(mirrored))
    passes = ForwardPasses(model, monkeypatch)
    built = _build(model, pair)
    dataset = DatasetProvider.get_dataset(pair.dataset, Split.TRAIN)
    assert passes.images == len(dataset)
    reference = compute_embeddings(model, dataset, batch_size=BATCH, num_workers=0)
    np.testing.assert_allclose(built.images, reference.images, atol=1e-6)


def test_a_killed_build_process_resumes(model, cache_path, monkeypatch):
    """SIGKILL (no chance to clean up) in the middle of a split: the rerun embeds only the shards that were missing."""
    code = (
        "from tti_eval.compute import build_embeddings; from tti_eval.common import EmbeddingDefinition, Split; "
        f"build_embeddings(EmbeddingDefinition(model='{PAIR.model}', dataset='{PAIR.dataset}'), [Split.TRAIN], "
        f"batch_size=2, num_workers=0, shard_size={SHARD})"
    )
    process = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "TTI_EVAL_CACHE_PATH": str(cache_path)})
    deadline = time.monotonic() + 120
    while (
        len(list(_shards_folder().glob("shard-*.npz"))) < 2 and process.poll() is None and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(list(_shards_folder().glob("shard-*.npz")))
    assert finished >= 2 and not embedding_path(PAIR, Split.TRAIN).exists()

    passes = ForwardPasses(model, monkeypatch)
    built = _build(model)
    assert passes.images == len(built.labels) - finished * SHARD
    assert not _shards_folder().exists()


def test_the_streamed_file_is_what_savez_writes(cache_path, tmp_path):
    rng = np.random.default_rng(0)
    embeddings = Embeddings(images=rng.random((10, 3)), labels=rng.integers(0, 4, 10), classes=rng.random((4, 3)))
    path = save_embeddings_streamed(
        PAIR, Split.TRAIN, np.array_split(embeddings.images, 3), (10, 3), embeddings.labels, embeddings.classes
    )
    reference = tmp_path / "reference.npz"
    np.savez(
        reference, image_embeddings=embeddings.images, labels=embeddings.labels, class_embeddings=embeddings.classes
    )
    with np.load(path, allow_pickle=False) as got, np.load(reference, allow_pickle=False) as expected:
        assert got.files == expected.files
        for name in expected.files:
            np.testing.assert_array_equal(got[name], expected[name])
    with pytest.raises(ValueError, match="expected 11 image embeddings"):
        save_embeddings_streamed(PAIR, Split.VALIDATION, [embeddings.images], (11, 3), embeddings.labels)
    assert not embedding_path(PAIR, Split.VALIDATION).exists()


def test_a_store_with_another_key_starts_afresh(tmp_path):
    final = tmp_path / "m_train.npz"
    store = ShardStore(final, "a", num_images=5, shard_size=2)
    assert [list(store.rows(s)) for s in range(store.num_shards)] == [[0, 1], [2, 3], [4]]
    store.write(1, np.ones((2, 3), np.float32), np.zeros(2, np.int64))
    assert ShardStore(final, "a", 5, 2).missing() == [0, 2] and ShardStore(final, "a", 5, 2).resumed_images() == 2
    assert ShardStore(final, "b", 5, 2).missing() == [0, 1, 2]


def test_overwrite_discards_the_finished_shards(model, cache_path, monkeypatch):
    """A rebuild asked to overwrite starts afresh: a finished shard (marked with a value no model gives) is not kept."""
    dataset = DatasetProvider.get_dataset(PAIR.dataset, Split.TRAIN)
    reference = compute_embeddings(model, dataset, batch_size=BATCH, num_workers=0)
    store = shard_store(PAIR, Split.TRAIN, dataset, SHARD)
    store.write(0, np.full((SHARD, reference.images.shape[1]), 0.5, np.float32), reference.labels[:SHARD])

    passes = ForwardPasses(model, monkeypatch)
    built = _build(model, overwrite=True)
    assert passes.images == len(dataset)
    np.testing.assert_allclose(built.images, reference.images, atol=1e-6)
    assert not _shards_folder().exists()


def test_build_pairs_and_the_cli_report_resumed_images(model, cache_path, monkeypatch):
    """The CLI's interruption message says what a rerun redoes; after an interruption, build_pairs' progress starts
    at the resumed images and a note says how many."""
    total = len(DatasetProvider.get_dataset(PAIR.dataset, Split.TRAIN))
    monkeypatch.setattr(ModelProvider, "get_model", lambda title, **kwargs: model)
    with monkeypatch.context() as patch:
        ForwardPasses(model, patch, interrupt_at_batch=1)  # within the CLI's first (default-sized) shard
        args = ["build", "-md", str(PAIR), "--split", "train", "--num-workers", "0", "--batch-size", str(BATCH)]
        interrupted = CliRunner().invoke(app, args)
    assert interrupted.exit_code == 130 and "Traceback" not in interrupted.output
    assert f"Interrupted: 0 of {total:,} train images of {PAIR} are embedded and kept" in interrupted.output
    assert f"a rerun embeds only the other {total:,}" in interrupted.output

    with monkeypatch.context() as patch:
        ForwardPasses(model, patch, interrupt_at_batch=5)
        with pytest.raises(BuildInterrupted):
            _build(model)
    steps, notes = [], []
    run = build_pairs(
        [PAIR],
        [Split.TRAIN],
        num_workers=0,
        batch_size=BATCH,
        shard_size=SHARD,
        progress=steps.append,
        on_note=lambda pair, split, text: notes.append(text),
    )
    assert run.failed == 0 and notes == [f"resuming: 32 of {total:,} images already embedded"]
    mine = [step for step in steps if step.split is Split.TRAIN]
    assert mine[0] == BuildProgress(PAIR, Split.TRAIN, 32, total, 32)
    assert mine[-1] == BuildProgress(PAIR, Split.TRAIN, total, total, 32)
