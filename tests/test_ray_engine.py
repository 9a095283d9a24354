"""`build --engine ray` on one session-scoped local Ray cluster (2 CPUs), against the in-process engine."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tti_eval.cli.main import app
from tti_eval.common import EmbeddingDefinition, Split, TTIEvalError
from tti_eval.common.cache import embedding_path, load_embeddings, load_metadata
from tti_eval.compute import build_embeddings, build_pairs, compute_embeddings, read_item, shard_store
from tti_eval.dataset import DatasetProvider
from tti_eval.dataset.images import BadImageError
from tti_eval.dataset.types.image_folder import ImageFolderDataset
from tti_eval.model import ModelProvider
from tti_eval.model.types.open_clip_model import OpenCLIPModel
from tti_eval.shards import ShardStore

PAIR = EmbeddingDefinition(model="tiny-openclip", dataset="digits-tree")
DYING = EmbeddingDefinition(model="tiny-openclip-dies-once", dataset=PAIR.dataset)  # same weights as PAIR
SHARD = 32


@pytest.fixture(scope="module")
def ray_cluster(tiny_models, digits_tree):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import the tests
    yield ray
    ray.shutdown()


class DiesOnce(OpenCLIPModel):
    """tiny-openclip, except that the first process to embed a batch dies on it (as a preempted node would)."""

    marker = ""

    def embed_images(self, pixel_values):
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        return super().embed_images(pixel_values)


@pytest.fixture(scope="module")
def engine(ray_cluster, tiny_models, tmp_path_factory):
    """The engine of a model whose first actor dies on its first batch: every build through it must survive that."""
    from tti_eval.ray_engine import RayEngine

    DiesOnce.marker = str(tmp_path_factory.mktemp("dies-once") / "died")
    ModelProvider.register_model(
        DiesOnce, DYING.model, title_in_source=tiny_models[PAIR.model].definition["title_in_source"]
    )
    return RayEngine(DYING.model, batch_size=8)


def _reference(split: Split):
    dataset = DatasetProvider.get_dataset(PAIR.dataset, split)
    return compute_embeddings(ModelProvider.get_model(PAIR.model), dataset, batch_size=8, num_workers=0)


def _seed_shard(pair: EmbeddingDefinition, shard: int, shard_size: int, dim: int) -> None:
    """A shard a previous driver finished, marked with a value no model gives, so a test can see it was kept."""
    dataset = DatasetProvider.get_dataset(pair.dataset, Split.VALIDATION)
    store = shard_store(pair, Split.VALIDATION, dataset, shard_size)
    rows = len(store.rows(shard))
    store.write(shard, np.full((rows, dim), 0.5, np.float32), np.arange(rows) % 10)


# Ray's deprecations of the options the engine passes are errors here: they are removed in a later Ray.
@pytest.mark.filterwarnings("error::ray.util.annotations.RayDeprecationWarning")
def test_ray_build_equals_the_in_process_engine_and_keeps_finished_shards(engine, cache_path):
    """One build covers four promises: equal embeddings, a finished shard kept, a killed actor retried, and images
    arriving batch by batch (so that decoding overlaps the model), not a shard at a time."""
    reference = _reference(Split.VALIDATION)
    _seed_shard(DYING, 1, SHARD, reference.images.shape[1])
    done = []
    built = build_embeddings(
        DYING, [Split.VALIDATION], engine=engine, shard_size=SHARD, progress=lambda split, d, total, r: done.append(d)
    )[Split.VALIDATION]
    assert os.path.exists(DiesOnce.marker)  # an actor did die
    assert len(set(done)) - 1 > 2  # after the resumed count, more arrivals than the two shards left to build
    seeded = np.zeros(len(reference.labels), bool)
    seeded[SHARD : 2 * SHARD] = True
    assert np.all(built.images[seeded] == 0.5)
    np.testing.assert_array_equal(built.labels[seeded], np.arange(SHARD) % 10)
    np.testing.assert_allclose(built.images[~seeded], reference.images[~seeded], atol=1e-5)
    np.testing.assert_array_equal(built.labels[~seeded], reference.labels[~seeded])
    np.testing.assert_allclose(built.classes, reference.classes, atol=1e-5)
    metadata = load_metadata(DYING, Split.VALIDATION)
    assert metadata["num_images"] == len(reference.labels) and metadata["model"]["title"] == DYING.model
    assert not list(embedding_path(DYING, Split.VALIDATION).parent.glob(".*"))  # no shards or temporaries left


class NotesReaders(ImageFolderDataset):
    """An image folder that notes which processes read its images."""

    folder = ""

    def get_image_and_label(self, index):
        Path(self.folder, f"read-{os.getpid()}").touch()
        return super().get_image_and_label(index)


class NotesEmbedders(OpenCLIPModel):
    """tiny-openclip, noting which processes embed."""

    folder = ""

    def embed_images(self, pixel_values):
        Path(self.folder, f"embed-{os.getpid()}").touch()
        return super().embed_images(pixel_values)


def test_images_are_decoded_in_tasks_of_their_own_not_in_the_model_actor(
    ray_cluster, tiny_models, digits_tree, tmp_path
):
    """On a CPU cluster, a read that asks for the same resources as the actor is fused into it, and the actor then
    decodes between its forward passes: the reading and the embedding processes must differ."""
    from tti_eval.ray_engine import RayEngine

    NotesReaders.folder = NotesEmbedders.folder = str(tmp_path)
    source = tiny_models[PAIR.model].definition["title_in_source"]
    ModelProvider.register_model(NotesEmbedders, "tiny-openclip-notes", title_in_source=source)
    DatasetProvider.register_dataset(NotesReaders, "digits-notes", title_in_source=str(digits_tree.root))
    dataset = DatasetProvider.get_dataset("digits-notes", Split.VALIDATION)
    store = ShardStore(tmp_path / "m_validation.npz", "k", len(dataset), SHARD)
    RayEngine("tiny-openclip-notes", batch_size=8).embed_shards(dataset, store, lambda n: None)
    noted = {kind: {p.name.split("-")[1] for p in tmp_path.glob(f"{kind}-*")} for kind in ("read", "embed")}
    assert noted["embed"] and noted["read"] - {str(os.getpid())}
    assert not noted["embed"] & noted["read"]


def test_build_engine_ray_from_the_cli(ray_cluster, cache_path):
    """The CLI on the test's Ray session; the split's only shard is already done, so no images need embedding."""
    from tti_eval.shards import DEFAULT_SHARD_SIZE

    _seed_shard(PAIR, 0, DEFAULT_SHARD_SIZE, _reference(Split.VALIDATION).images.shape[1])
    result = CliRunner().invoke(app, ["build", "-md", str(PAIR), "--engine", "ray", "--split", "validation"])
    assert result.exit_code == 0, result.output
    assert "validation) built" in result.output and "80 of 80 images already embedded" in result.output
    assert "Building on Ray (a local cluster) …" in result.output
    assert np.all(load_embeddings(PAIR, Split.VALIDATION).images == 0.5)


def test_a_build_with_every_split_cached_starts_no_ray(cache_path, tiny_models, digits_tree, monkeypatch):
    from tti_eval import ray_engine

    args = ["build", "-md", str(PAIR), "--split", "validation"]
    assert CliRunner().invoke(app, [*args, "--num-workers", "0"]).exit_code == 0  # cached by the local engine

    def no_session(address):
        raise AssertionError("Ray started")

    monkeypatch.setattr(ray_engine, "ray_session", no_session)
    started = []
    run = build_pairs([PAIR], [Split.VALIDATION], engine="ray", on_ray_start=lambda: started.append(True))
    assert not started and not run.problems and run.results[0].built == {Split.VALIDATION: False}
    result = CliRunner().invoke(app, [*args, "--engine", "ray"])
    assert result.exit_code == 0, result.output
    assert "validation) already cached" in result.output and "Ray" not in result.output


def test_a_damaged_first_image_is_not_an_unreadable_source(engine, digits_tree, tmp_path):
    copy = tmp_path / "digits"
    shutil.copytree(digits_tree.root, copy)
    (damaged := sorted((copy / "validation").rglob("*.png"))[0]).write_bytes(b"not a png")
    DatasetProvider.register_dataset(ImageFolderDataset, "damaged-first-digits", title_in_source=str(copy))
    dataset = DatasetProvider.get_dataset("damaged-first-digits", Split.VALIDATION)
    assert "bad" in read_item(dataset, 0)  # the damaged file is the split's first image
    store = ShardStore(tmp_path / "m_validation.npz", "k", len(dataset), SHARD)
    skipped = []
    engine.embed_shards(dataset, store, lambda n: None, lambda image, reason: skipped.append(image))
    assert len(skipped) == 1 and damaged.name in skipped[0] and store.missing() == []


def test_a_source_the_workers_cannot_read_gets_one_sentence(engine, digits_tree, tmp_path):
    copy = tmp_path / "digits"
    shutil.copytree(digits_tree.root, copy)
    DatasetProvider.register_dataset(ImageFolderDataset, "vanishing-digits", title_in_source=str(copy))
    dataset = DatasetProvider.get_dataset("vanishing-digits", Split.VALIDATION)
    shutil.rmtree(copy)  # listed by the driver, gone for the workers
    store = ShardStore(tmp_path / "m_validation.npz", "k", len(dataset), SHARD)
    with pytest.raises(TTIEvalError, match="cannot read dataset 'vanishing-digits'.*every node can read them"):
        engine.embed_shards(dataset, store, lambda n: None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "2"], "apply to --engine ray only"),
        (["--engine", "ray", "--device", "cpu"], "apply to --engine local"),
        (["--engine", "ray", "--gpus-per-worker", "1"], "lower --workers or --gpus-per-worker"),
    ],
)
def test_misplaced_engine_options_get_one_sentence(ray_cluster, cache_path, args, message):
    result = CliRunner().invoke(app, ["build", "-md", str(PAIR), *args])
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_without_ray_installed_the_engine_says_how_to_install(monkeypatch):
    from tti_eval import ray_engine

    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without the extra sees
    with pytest.raises(TTIEvalError, match=r"pip install -e '\.\[ray\]'"):
        ray_engine.RayEngine(PAIR.model)


def test_nothing_imports_ray_unless_the_ray_engine_is_used():
    code = "import sys, tti_eval.cli.main, tti_eval.compute, tti_eval.shards; print('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_a_cluster_that_cannot_be_joined_gets_one_sentence():
    ray = pytest.importorskip("ray")
    from tti_eval.ray_engine import _connection_problem

    refused = _connection_problem("head:6379", ray.exceptions.AuthenticationError("token mismatch"))
    assert "at head:6379 needs its token" in refused and "~/.ray/auth_token" in refused
    unreachable = _connection_problem("head:6379", ConnectionError("could not connect to GCS"))
    assert unreachable.startswith("Cannot join the Ray cluster at head:6379") and "ray start --head" in unreachable


def test_an_unreadable_image_reaches_the_driver_as_our_sentence_or_is_skipped(tiny_models, digits_tree, tmp_path):
    """Raised in a Ray task, BadImageError would reach the user wrapped in Ray's traceback; the engine's read task
    passes the image on as data and the driver raises (or skips) it. The engine's task and actor functions run here
    in this process, in the order Ray runs them, with batches arriving out of order as Ray Data delivers them."""
    from tti_eval.ray_engine import _Embedder, _Gathered, _read_and_preprocess

    copy = tmp_path / "digits"
    shutil.copytree(digits_tree.root, copy)
    unreadable = sorted((copy / "validation").rglob("*.png"))[3]
    unreadable.write_bytes(b"not a png")
    DatasetProvider.register_dataset(ImageFolderDataset, "broken-digits", title_in_source=str(copy))
    dataset = DatasetProvider.get_dataset("broken-digits", Split.VALIDATION)
    model = ModelProvider.get_model(PAIR.model)
    embedder = _Embedder(lambda: model, threads=None)

    def gather(on_skip) -> ShardStore:
        store = ShardStore(tmp_path / f"skip-{on_skip is not None}.npz", "k", len(dataset), SHARD)
        gathered = _Gathered(store, dataset, on_skip)
        for start in reversed(range(0, len(dataset), 8)):
            indices = {"index": np.arange(start, min(start + 8, len(dataset)))}
            gathered.add(embedder(_read_and_preprocess(indices, dataset, model.get_image_preprocessor())))
        return store

    with pytest.raises(BadImageError) as raised:
        gather(None)
    assert unreadable.name in str(raised.value) and "of dataset 'broken-digits' cannot be read" in str(raised.value)
    everything = _read_and_preprocess({"index": np.arange(len(dataset))}, dataset, model.get_image_preprocessor())
    assert [name for name in everything["bad"] if name] == [raised.value.item]  # the read task itself did not raise

    skipped, expected = [], []
    store = gather(lambda image, reason: skipped.append((image, reason)))
    reference = compute_embeddings(model, dataset, batch_size=8, num_workers=0, on_skip=lambda *b: expected.append(b))
    assert skipped == store.skipped() == expected and len(expected) == 1
    np.testing.assert_allclose(np.concatenate(list(store.image_chunks())), reference.images, atol=1e-5)
    np.testing.assert_array_equal(store.labels(), reference.labels)
