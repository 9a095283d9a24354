"""`tti-eval build` and the engine behind it, end to end on tiny local models and the on-disk digits tree."""

import itertools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tti_eval import compute
from tti_eval.cli.main import app
from tti_eval.common import EmbeddingDefinition, Split
from tti_eval.common.cache import embedding_path, load_embeddings, load_metadata
from tti_eval.compute import BuildProgress, PairBuild, build_pairs, compute_embeddings, embed_class_prompts
from tti_eval.dataset import DatasetProvider
from tti_eval.model import ModelProvider

runner = CliRunner()
PAIR = EmbeddingDefinition(model="tiny-hf-clip", dataset="digits-tree")


@pytest.fixture(scope="module")
def sources(tiny_models, digits_tree):
    return tiny_models, digits_tree


def _invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_build_writes_both_splits_then_skips_then_overwrites(sources, cache_path):
    result = _invoke("build", "--model-dataset", str(PAIR), "--num-workers", "0")
    assert result.exit_code == 0, result.output
    paths = [embedding_path(PAIR, s) for s in (Split.TRAIN, Split.VALIDATION)]
    assert all(p.is_file() for p in paths) and not embedding_path(PAIR, Split.TEST).exists()

    dataset = DatasetProvider.get_dataset(PAIR.dataset, Split.VALIDATION)
    embeddings = load_embeddings(PAIR, Split.VALIDATION)
    assert embeddings.images.shape[0] == len(dataset) and embeddings.classes.shape[0] == len(dataset.class_names)
    np.testing.assert_allclose(np.linalg.norm(embeddings.images, axis=1), 1, atol=1e-5)
    assert list(embeddings.labels) == [dataset.get_image_and_label(i)[1] for i in range(len(dataset))]
    metadata = load_metadata(PAIR, Split.VALIDATION)
    assert metadata["class_names"] == dataset.class_names and metadata["num_images"] == len(dataset)
    assert metadata["model"]["title"] == PAIR.model and metadata["split"] == "validation"

    stamps = [p.stat().st_mtime_ns for p in paths]
    result = _invoke("build", "--model-dataset", str(PAIR))
    assert result.exit_code == 0 and "already cached" in result.output
    assert [p.stat().st_mtime_ns for p in paths] == stamps

    result = _invoke("build", "--model-dataset", str(PAIR), "--overwrite", "--split", "train", "--num-workers", "0")
    assert result.exit_code == 0
    assert paths[0].stat().st_mtime_ns != stamps[0] and paths[1].stat().st_mtime_ns == stamps[1]


@pytest.mark.parametrize("model_title", ["tiny-openclip", "tiny-siglip"])
def test_engine_equals_one_image_at_a_time(sources, model_title):
    """Batched preprocessing in workers must give what embedding each image on its own gives."""
    model = ModelProvider.get_model(model_title)
    dataset = DatasetProvider.get_dataset("digits-tree", Split.VALIDATION)
    embeddings = compute_embeddings(model, dataset, batch_size=7, num_workers=1)
    preprocess = model.get_image_preprocessor()
    for i in (0, len(dataset) // 2, len(dataset) - 1):
        image, label = dataset.get_image_and_label(i)
        reference = model.embed_images(preprocess([image]))[0]
        np.testing.assert_allclose(embeddings.images[i], reference, atol=1e-5)
        assert embeddings.labels[i] == label
    reference_classes = np.stack([model.embed_texts([p[0]])[0] for p in dataset.prompts])
    np.testing.assert_allclose(embeddings.classes, reference_classes, atol=1e-5)


def test_several_templates_are_averaged_per_class(sources):
    model = ModelProvider.get_model("tiny-openclip")
    prompts = [[f"a {c} here", f"the digit {c}"] for c in ("one", "two", "three")]
    got = embed_class_prompts(model, prompts)
    for row, class_prompts in zip(got, prompts, strict=True):
        each = model.embed_texts(class_prompts)
        mean = each.mean(axis=0)
        np.testing.assert_allclose(row, mean / np.linalg.norm(mean), atol=1e-6)


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("tiny-hf-clip", "is not of the form MODEL/DATASET"),
        ("tiny-hf-clip/digits-tree/x", "is not of the form MODEL/DATASET"),
        ("tiny-hf-clp/digits-tree", "Unknown model 'tiny-hf-clp'. Did you mean 'tiny-hf-clip'"),
        ("tiny-hf-clip/digits-tre", "Unknown dataset 'digits-tre'. Did you mean 'digits-tree'"),
    ],
)
def test_bad_pairs_get_one_sentence(sources, cache_path, pair, message):
    result = _invoke("build", "--model-dataset", pair)
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output


def test_a_failing_pair_does_not_stop_the_others(sources, cache_path, test_sources_dir):
    (test_sources_dir / "models" / "broken-local.json").write_text(
        '{"model_type": "HFModel", "title": "broken-local", "title_in_source": "/nowhere/at/all"}'
    )
    try:
        result = _invoke("build", "-md", "broken-local/digits-tree", "-md", str(PAIR), "--num-workers", "0")
    finally:
        (test_sources_dir / "models" / "broken-local.json").unlink()
    assert result.exit_code == 1
    assert "broken-local/digits-tree" in result.output and embedding_path(PAIR, Split.VALIDATION).is_file()


def test_without_a_terminal_the_picker_asks_for_pairs(sources, cache_path):
    result = _invoke("build")
    assert result.exit_code == 1 and "--model-dataset" in result.output


def _build_process(cache: str) -> subprocess.Popen:
    env = {**os.environ, "TTI_EVAL_CACHE_PATH": cache}
    code = "from tti_eval.cli.main import cli; cli()"
    args = ["build", "-md", str(PAIR), "--batch-size", "2", "--num-workers", "0"]
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def _wait_for(condition, process, timeout=120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)


def _assert_nothing_partial(cache_path) -> None:
    folder = embedding_path(PAIR, Split.TRAIN).parent
    for file in folder.glob("*.npz") if folder.is_dir() else []:
        split = Split(file.stem.rsplit("_", 1)[1])
        load_embeddings(PAIR, split)  # complete and readable, or it would raise


def test_a_killed_build_leaves_nothing_partial_and_a_rerun_completes(sources, cache_path):
    train, validation = embedding_path(PAIR, Split.TRAIN), embedding_path(PAIR, Split.VALIDATION)
    temp_files = lambda: list(train.parent.glob(".*.tmp")) if train.parent.is_dir() else []  # noqa: E731
    kill_points = [
        lambda: train.parent.is_dir(),  # while the first split is being embedded
        lambda: bool(temp_files()),  # while a file is being written
        lambda: train.is_file(),  # between splits / during the second split
    ]
    for condition in kill_points:
        process = _build_process(str(cache_path))
        _wait_for(condition, process)
        process.send_signal(signal.SIGKILL)
        process.wait()
        _assert_nothing_partial(cache_path)

    process = _build_process(str(cache_path))
    _wait_for(lambda: train.parent.is_dir(), process)
    process.send_signal(signal.SIGINT)
    output = process.communicate()[0].decode()
    assert process.returncode != 0 and "Traceback" not in output
    _assert_nothing_partial(cache_path)

    process = _build_process(str(cache_path))
    assert process.wait() == 0, process.stdout.read().decode()
    assert train.is_file() and validation.is_file() and not temp_files()
    _assert_nothing_partial(cache_path)


def test_picker_hides_built_pairs_unless_asked(sources, cache_path, monkeypatch):
    """With no pair named, `build` offers every model×dataset pair that is not built yet (all with
    --include-existing), and with --by-dataset asks for the dataset first."""
    from tti_eval.cli import pickers

    assert _invoke("build", "-md", str(PAIR), "--num-workers", "0").exit_code == 0
    offered: dict[str, list] = {}

    def pick_pairs(pairs, message="", hidden=0):
        offered["pairs"] = list(pairs)
        return []

    def pick_one(options, message=""):
        offered["datasets"] = list(options)
        return PAIR.dataset

    def pick_some(options, message="", what="", hidden=0):
        offered["models"] = list(options)
        offered["hidden models"] = hidden
        return []

    monkeypatch.setattr(pickers, "require_terminal", lambda what, how="": None)
    for name, fake in (("pick_pairs", pick_pairs), ("pick_one", pick_one), ("pick_some", pick_some)):
        monkeypatch.setattr(pickers, name, fake)

    assert _invoke("build").exit_code == 0
    assert (
        PAIR not in offered["pairs"]
        and EmbeddingDefinition(model="tiny-siglip", dataset=PAIR.dataset) in offered["pairs"]
    )
    assert _invoke("build", "--include-existing").exit_code == 0
    assert PAIR in offered["pairs"]

    assert _invoke("build", "--by-dataset").exit_code == 0
    assert PAIR.dataset in offered["datasets"]
    assert PAIR.model not in offered["models"] and "tiny-siglip" in offered["models"]
    assert offered["hidden models"] == 1  # the built PAIR, counted in the picker's header


def test_pickers_with_nothing_to_pick_say_so():
    from tti_eval.cli.pickers import pick_one, pick_some
    from tti_eval.common import TTIEvalError

    with pytest.raises(TTIEvalError, match="nothing to choose from"):
        pick_one([], "Pick a dataset")
    assert pick_some([], "Pick models") == []


def test_an_empty_split_gets_one_sentence(sources, tmp_path):
    from PIL import Image

    from tti_eval.common import TTIEvalError
    from tti_eval.dataset.types.image_folder import ImageFolderDataset

    for split in ("train", "validation", "test"):
        (tmp_path / split / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "a" / "x.png")
    DatasetProvider.register_dataset(ImageFolderDataset, "empty-validation", title_in_source=str(tmp_path))
    dataset = DatasetProvider.get_dataset("empty-validation", Split.VALIDATION)
    with pytest.raises(TTIEvalError, match="has no images"):
        compute_embeddings(ModelProvider.get_model("tiny-openclip"), dataset, num_workers=0)


def test_a_model_that_fails_to_load_is_tried_once_for_all_its_pairs(sources, cache_path, test_sources_dir, monkeypatch):
    calls = []
    real = ModelProvider.get_model

    def counting(title, **kwargs):
        calls.append(title)
        return real(title, **kwargs)

    monkeypatch.setattr(ModelProvider, "get_model", counting)
    (test_sources_dir / "models" / "broken-twice.json").write_text(
        '{"model_type": "HFModel", "title": "broken-twice", "title_in_source": "/nowhere/at/all"}'
    )
    try:
        result = _invoke("build", "-md", "broken-twice/digits-tree", "-md", "broken-twice/digits-tree-hf")
    finally:
        (test_sources_dir / "models" / "broken-twice.json").unlink()
    assert result.exit_code == 1 and calls == ["broken-twice"]
    assert result.output.count("✗") == 2


# -- the library pipeline behind `build` -------------------------------------------------------------------------------


def test_build_pairs_reports_progress_and_results_without_a_terminal(sources, cache_path, monkeypatch):
    loads = []
    real = ModelProvider.get_model
    monkeypatch.setattr(ModelProvider, "get_model", lambda title, **kw: loads.append(title) or real(title, **kw))
    pairs = [PAIR, EmbeddingDefinition(model=PAIR.model, dataset="digits-tree-hf")]
    steps, outcomes = [], []
    run = build_pairs(pairs, [Split.VALIDATION], num_workers=0, batch_size=4, progress=steps.append,
                      on_pair=outcomes.append)  # fmt: skip
    assert run.problems == [] and run.failed == 0 and loads == [PAIR.model]  # one load for both pairs
    assert run.results == outcomes == [PairBuild(p, {Split.VALIDATION: True}) for p in pairs]
    assert steps[0] == BuildProgress(PAIR, None, 0, 0)  # the model loading
    for pair in pairs:
        n = len(DatasetProvider.get_dataset(pair.dataset, Split.VALIDATION))
        mine = [(s.done, s.total) for s in steps if s.pair == pair and s.split is Split.VALIDATION]
        assert mine[0] == (0, n) and mine[-1] == (n, n) and all(a[0] < b[0] for a, b in itertools.pairwise(mine))
        assert load_embeddings(pair, Split.VALIDATION).images.shape[0] == n
    again = build_pairs(pairs, [Split.VALIDATION], num_workers=0)
    assert again.results == [PairBuild(p, {Split.VALIDATION: False}) for p in pairs] and loads == [PAIR.model]


def test_a_dataset_that_cannot_load_fails_before_the_model_loads(sources, cache_path, monkeypatch):
    from tti_eval.common import TTIEvalError

    loads = []
    monkeypatch.setattr(ModelProvider, "get_model", lambda title, **kw: loads.append(title))

    def broken(title, split=None, **kw):
        raise TTIEvalError(f"Dataset '{title}' cannot be read; fix it.")

    monkeypatch.setattr(DatasetProvider, "get_dataset", broken)
    run = build_pairs([PAIR], num_workers=0)
    assert run.problems == [f"{PAIR}: Dataset 'digits-tree' cannot be read; fix it."] and loads == []


def test_an_unexpected_error_keeps_its_traceback(sources, cache_path, monkeypatch, caplog):
    from tti_eval import compute

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(compute, "embed_class_prompts", bug)
    run = build_pairs([PAIR], [Split.VALIDATION], num_workers=0)
    assert run.problems == [f"{PAIR}: ZeroDivisionError: a bug (an unexpected error; its traceback is logged above)."]
    logged = [r for r in caplog.records if r.exc_info]
    assert len(logged) == 1 and logged[0].exc_info[0] is ZeroDivisionError
    with pytest.raises(ZeroDivisionError):
        build_pairs([PAIR], [Split.VALIDATION], num_workers=0, reraise=True)
    result = runner.invoke(app, ["--debug", "build", "-md", str(PAIR), "--split", "validation", "--num-workers", "0"])
    assert isinstance(result.exception, ZeroDivisionError)
    result = runner.invoke(app, ["build", "-md", str(PAIR), "--split", "validation", "--num-workers", "0"])
    assert result.exit_code == 1 and "ZeroDivisionError: a bug" in result.output


class _Fault(Exception):
    """The failure injected at one phase of a build."""


def _phases(monkeypatch):
    """Each phase of a build, with a patch that makes it fail deterministically (no timing, no signals)."""
    from tti_eval import compute
    from tti_eval.common import atomic

    def fail(*args, **kwargs):
        raise _Fault()

    def after(calls: int, real):
        seen = []

        def patched(*args, **kwargs):
            seen.append(1)
            if len(seen) > calls:
                raise _Fault()
            return real(*args, **kwargs)

        return patched

    def into_second(real):
        # the second split's final file, whatever else (its shards) is written before it
        def patched(source, target):
            if Path(target) == embedding_path(PAIR, Split.VALIDATION):
                raise _Fault()
            return real(source, target)

        return patched

    return {
        "opening the dataset": lambda: monkeypatch.setattr(DatasetProvider, "get_dataset", fail),
        "loading the model": lambda: monkeypatch.setattr(ModelProvider, "get_model", fail),
        "embedding prompts": lambda: monkeypatch.setattr(compute, "embed_class_prompts", fail),
        "embedding images, after one batch": lambda: monkeypatch.setattr(
            compute.Model, "embed_images", after(1, compute.Model.embed_images)
        ),
        "writing the first file": lambda: monkeypatch.setattr(atomic.os, "fsync", fail),
        "renaming the first file": lambda: monkeypatch.setattr(atomic.os, "replace", fail),
        "writing the second file": lambda: monkeypatch.setattr(atomic.os, "replace", into_second(atomic.os.replace)),
    }


@pytest.mark.parametrize("phase", list(_phases(pytest.MonkeyPatch())))
def test_a_build_failing_at_any_phase_leaves_only_complete_files(sources, cache_path, monkeypatch, phase):
    folder = embedding_path(PAIR, Split.TRAIN).parent
    with monkeypatch.context() as patch:
        _phases(patch)[phase]()
        with pytest.raises(_Fault):
            build_pairs([PAIR], num_workers=0, batch_size=8, reraise=True)
    # A split's finished shards are kept on purpose (the rerun resumes from them); they too must be complete.
    shard_folders = [p for p in folder.iterdir() if p.name.endswith(".shards")] if folder.is_dir() else []
    for shards in shard_folders:
        assert all(p.name == "key.json" or p.name.startswith("shard-") for p in shards.iterdir())
        for shard in shards.glob("shard-*.npz"):
            np.load(shard, allow_pickle=False)["images"]
    files = sorted(p.name for p in folder.iterdir() if p not in shard_folders) if folder.is_dir() else []
    expected = [embedding_path(PAIR, Split.TRAIN).name] if phase == "writing the second file" else []
    assert files == expected  # no temporary file, nothing half-written
    for name in files:
        load_embeddings(PAIR, Split(name.removesuffix(".npz").rsplit("_", 1)[1]))
    assert build_pairs([PAIR], num_workers=0).failed == 0  # a rerun completes
    assert all(load_embeddings(PAIR, s).images.shape[0] for s in (Split.TRAIN, Split.VALIDATION))


@pytest.mark.parametrize(
    ("cores", "workers"),
    # on an accelerator every core but the one feeding it decodes, one at least, eight at most
    [(1, 1), (2, 1), (4, 3), (9, 8), (16, 8), (64, 8)],
)
def test_decode_workers_for_an_accelerator_follow_the_free_cores(cores, workers):
    assert compute.accelerator_num_workers(cores) == workers


def test_free_cores_are_the_ones_this_process_may_use(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 5, 9}, raising=False)  # e.g. `taskset -c 0,5,9`
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert compute.usable_cores() == 3 and compute.accelerator_num_workers() == 2


@pytest.mark.parametrize(
    ("preprocess", "forward", "cores", "workers"),
    # seconds per batch on one thread: decode + preprocess, forward
    [
        (0.16, 0.008, 2, 2),  # a cheap model (a GPU's regime) on two cores: both decode
        (0.16, 3.2, 2, 0),  # ViT-B-32 on two cores: a worker's core costs the forward more than decoding does
        (0.16, 0.008, 1, 0),  # one core: nothing runs beside the forward
        (0.16, 3.2, 16, 1),  # ViT-B-32 on 16: one worker keeps up with the forward on the other 15
        (0.16, 0.008, 16, 16),  # a cheap model on 16: every core decodes
        (1.0, 1.0, 4, 2),  # equal stages on 4: two workers, two forward threads
        (0.1, 4.0, 8, 0),  # one worker would promise only 5 % (0.571 against 0.6 s), less than workers' own costs
    ],
)
def test_decode_workers_follow_the_measured_stage_times(preprocess, forward, cores, workers):
    assert compute.workers_for_stage_times(preprocess, forward, cores) == workers


def test_a_cpu_build_times_its_first_batch_and_embeds_alike_with_any_workers(sources, monkeypatch):
    """The first few images are decoded and embedded in-process on one thread and timed; the rest get the workers
    those times call for. Whatever that number, the embeddings are the same."""
    model = ModelProvider.get_model("tiny-openclip")
    dataset = DatasetProvider.get_dataset("digits-tree", Split.VALIDATION)
    reference = compute_embeddings(model, dataset, batch_size=7, num_workers=0)
    threads, measured, embed = [], [], model.embed_images

    def embed_and_count_threads(pixel_values):
        threads.append(compute.torch.get_num_threads())
        return embed(pixel_values)

    monkeypatch.setattr(model, "embed_images", embed_and_count_threads)
    torch_threads = compute.torch.get_num_threads()
    compute.torch.set_num_threads(2)  # the tests run on one thread; a build's forward pass has more
    try:
        for workers in (0, 1, 2):
            measured.clear(), threads.clear()
            monkeypatch.setattr(compute, "workers_for_stage_times", lambda *t, w=workers: measured.append(t) or w)
            embeddings = compute_embeddings(model, dataset, batch_size=7, num_workers=None)
            ((preprocess, forward, cores),) = measured
            assert preprocess > 0 and forward > 0 and cores == compute.usable_cores()
            assert len(threads) == 1 + -(-len(dataset) // 7)  # the probe's images, then the first batch's rest
            # timed on one thread; then the forward keeps the cores the workers leave
            assert threads == [1] + [max(1, min(2, cores - workers)) if workers else 2] * (len(threads) - 1)
            np.testing.assert_allclose(embeddings.images, reference.images, atol=1e-6)
            np.testing.assert_array_equal(embeddings.labels, reference.labels)
    finally:
        compute.torch.set_num_threads(torch_threads)
    measured.clear()
    compute_embeddings(model, dataset, batch_size=7, num_workers=1)  # a number given is taken as it is
    assert not measured
