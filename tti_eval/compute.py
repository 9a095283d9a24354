"""The build engine: images and prompts in, cached L2-normalised embeddings out.

Preprocessing happens in DataLoader workers, one processor call per batch, through the model's weight-free
preprocessor; the network runs on the main process's device under `torch.inference_mode`. The model object never
reaches a worker or a `datasets` fingerprint, which is what made the original tool pickle every weight per call.

`build_pairs` is the pipeline the CLI's `build` runs, as a library call: progress goes to plain callbacks, so a
notebook gets exactly what the command does, and the command only draws it.
"""

import itertools
import logging
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from datetime import UTC, datetime
from functools import cache, partial
from typing import Any, Literal, NamedTuple, Protocol, TypeVar

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler
from torch.utils.data import Dataset as TorchDataset

from tti_eval.common import EmbeddingDefinition, Embeddings, Split, TTIEvalError
from tti_eval.common.atomic import remove_stale_temp_files
from tti_eval.common.cache import array_shapes, embedding_path, load_embeddings, save_embeddings_streamed
from tti_eval.common.errors import CacheError
from tti_eval.common.malloc import freed_memory_kept
from tti_eval.common.split import DEFAULT_SPLITS
from tti_eval.common.vectors import row_chunks
from tti_eval.dataset import DatasetProvider
from tti_eval.dataset.base import Dataset
from tti_eval.dataset.images import BadImageError, to_rgb
from tti_eval.dataset.splits import describe_carving
from tti_eval.model import ModelProvider
from tti_eval.model.base import Model
from tti_eval.provenance import Memo, build_fingerprint, kept_as_cached, package_versions, split_state
from tti_eval.shards import DEFAULT_SHARD_SIZE, ShardStore, shard_key

DEFAULT_BATCH_SIZE = 32
ProgressCallback = Callable[[int], None]
SplitProgress = Callable[[Split, int, int, int], None]  # (split, images done, images in the split, resumed of them)
SkipCallback = Callable[[str, str], None]  # (image name, reason)
NoteCallback = Callable[[Split, str], None]  # one line about a split worth telling the user (why it is rebuilt, ...)

logger = logging.getLogger("tti_eval")
_T = TypeVar("_T")


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity (a container or `taskset` limit), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def accelerator_num_workers(cores: int | None = None) -> int:
    """Workers that decode and preprocess images for a model on an accelerator, given `cores` usable (default: this
    process's): the model is fast there and decoding decides the speed, so all cores but the one that feeds the
    device, at most 8. A build on a CPU times its first batch and asks `workers_for_stage_times` instead."""
    cores = usable_cores() if cores is None else cores
    return min(8, max(1, cores - 1))


# Workers cost what `workers_for_stage_times` leaves out (starting them, copying each batch between processes), so
# they must promise to make a batch at least this much faster.
MIN_WORKER_SPEEDUP = 1.1


# A CPU build times this many images in-process, on one thread, before it chooses its workers: few, because the other
# cores idle meanwhile (a whole batch of 32 phone photos took 4.4 s here), enough to time the forward pass.
PROBE_IMAGES = 4


def workers_for_stage_times(preprocess_seconds: float, forward_seconds: float, cores: int) -> int:
    """Decoding workers for a CPU build of `cores` cores, from the decode + preprocess time and the forward time of
    the same images, both on one thread: the count that predicts the shortest time per batch.

    The forward is assumed to scale linearly with threads. Without workers a batch takes preprocess + forward /
    cores. With `w`, the workers decode `w` batches at once while the forward runs on the cores they leave (one at
    least), so a batch takes the longest of: preprocess / w; forward / the threads it keeps; and all the work over
    all the cores. A cheap model (a GPU's regime) gets about a worker per core; one whose forward dominates (ViT-B-32
    on a CPU) none on a few cores, where a worker's core costs the forward more than decoding in between batches."""

    def per_batch(workers: int) -> float:
        if workers == 0:
            return preprocess_seconds + forward_seconds / cores
        return max(
            preprocess_seconds / workers,
            forward_seconds / max(1, cores - workers),
            (preprocess_seconds + forward_seconds) / cores,
        )

    best = min(range(cores + 1), key=per_batch)  # the first of equals: fewer processes for the same speed
    return best if per_batch(0) > MIN_WORKER_SPEEDUP * per_batch(best) else 0


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _cores_left_to_the_model(device: torch.device, workers: int) -> AbstractContextManager:
    """On a CPU, let the forward pass use only the cores the workers leave free, so the two never fight."""
    if device.type == "cpu" and workers:
        return _torch_threads(max(1, min(torch.get_num_threads(), usable_cores() - workers)))
    return nullcontext()


def read_item(dataset: Dataset, index: int) -> dict[str, Any]:
    """The index-th item as `{"image": 8-bit RGB, "label"}`, untransformed: the engine's preprocessing must not depend
    on whatever transform a notebook user set on the dataset. An image that cannot be read comes back as
    `{"bad": name, "reason": ...}`, plain data that crosses a worker (or Ray task) boundary intact, where an exception
    would arrive wrapped in the worker's traceback."""
    try:
        image, label = dataset.get_image_and_label(index)
        return {"image": to_rgb(image), "label": label}
    except BadImageError as e:
        return {"bad": e.item, "reason": e.reason}


class _RawItems(TorchDataset):
    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return read_item(self.dataset, index)


def _single_threaded_worker(_: int) -> None:
    # Workers only decode and resize; torch threads in every worker would fight the forward pass for the cores.
    torch.set_num_threads(1)


def embed_class_prompts(model: Model, prompts: Sequence[Sequence[str]]) -> np.ndarray:
    """One embedding per class: each prompt embedded and normalised, averaged over templates, renormalised.

    With a single template this is exactly that prompt's normalised embedding, as in the original tool."""
    num_templates = len(prompts[0])
    flat = [prompt for class_prompts in prompts for prompt in class_prompts]
    embedded = model.embed_texts(flat).reshape(len(prompts), num_templates, -1)
    if num_templates == 1:
        return embedded[:, 0]
    mean = embedded.mean(axis=1)
    return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)


def _embedded_batches(
    model: Model, dataset: Dataset, batches: Iterable[list[int]], num_workers: int | None
) -> Iterator[tuple[np.ndarray | None, np.ndarray, list[dict[str, str]]]]:
    """(image embeddings or None, labels, unreadable items) of each batch of dataset indices, in the order given.

    With `num_workers` None on a CPU, the first `PROBE_IMAGES` images are decoded and embedded here, timed, and the
    rest get the workers `workers_for_stage_times` picks from those times (the choice depends only on the ratio of
    the two, so a few images tell it as well as a batch)."""
    collate = model.get_collate_fn()

    def embedded(batch: dict[str, Any]) -> tuple[np.ndarray | None, np.ndarray, list[dict[str, str]]]:
        images = model.embed_images(batch["pixel_values"]) if batch["pixel_values"] is not None else None
        return images, batch["labels"].numpy(), batch["bad"]

    batches = iter(batches)
    with freed_memory_kept():
        workers = num_workers
        if workers is None and model.device.type == "cpu":
            first = next(batches, None)
            if first is None:
                return
            probe, first = first[:PROBE_IMAGES], first[PROBE_IMAGES:]
            # One thread, as in a worker, and because on a busy machine a multi-threaded forward pass of a cheap
            # model often stalls ten times its length on one descheduled thread: measured here on 2 shared cores.
            with _torch_threads(1):
                start = time.perf_counter()
                batch = collate([read_item(dataset, index) for index in probe])
                decoding = time.perf_counter() - start
                result = embedded(batch)
                forward = time.perf_counter() - start - decoding
            workers = workers_for_stage_times(decoding, forward, usable_cores())
            logger.debug(
                "First %d images: %.3f s decoding, %.3f s forward; %d workers decode the rest",
                len(probe),
                decoding,
                forward,
                workers,
            )
            yield result
            second = first or next(batches, None)
            if not second:  # no workers to start for nothing
                return
            batches = itertools.chain([second], batches)
        elif workers is None:
            workers = accelerator_num_workers()
        loader = DataLoader(
            _RawItems(dataset),
            batch_sampler=batches,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=model.device.type == "cuda",
            worker_init_fn=_single_threaded_worker if workers else None,
            prefetch_factor=4 if workers else None,
        )
        with _cores_left_to_the_model(model.device, workers):
            for batch in loader:
                yield embedded(batch)


def pass_on_bad(bad: list[dict[str, str]], dataset: Dataset, on_skip: SkipCallback | None) -> None:
    """Raise the first unreadable item (`read_item`'s "bad" form) as a `BadImageError`, or report each to `on_skip`."""
    for item in bad:
        if on_skip is None:
            raise BadImageError(item["bad"], dataset.title, item["reason"])
        on_skip(item["bad"], item["reason"])


# Two different classes whose prompt embeddings are closer than this are one point to the model: its text tower
# cannot tell them apart (a transformers folder without its tokenizer files embeds every prompt alike).
COLLAPSED_COSINE = 0.9999


def check_distinct_classes(classes: np.ndarray, class_names: Sequence[str], model: str) -> None:
    """Refuse class embeddings (unit rows) in which two different classes coincide: zero-shot scores built on them
    would be chance passed off as a result. Compared a block of rows at a time, so many classes need little memory."""
    for rows in row_chunks(len(classes)):
        cosines = classes[rows] @ classes.T
        cosines[np.arange(cosines.shape[0]), np.arange(rows.start, rows.stop)] = -np.inf  # a class against itself
        flat = int(np.argmax(cosines))
        first, second = divmod(flat, cosines.shape[1])
        if cosines[first, second] > COLLAPSED_COSINE:
            raise TTIEvalError(
                f"Model '{model}' embeds the prompts of classes '{class_names[rows.start + first]}' and "
                f"'{class_names[second]}' identically (cosine {cosines[first, second]:.5f}), so it cannot tell classes "
                "apart; check that its tokenizer files are present and that the prompts fit its text length."
            )


def embed_images(
    model: Model,
    dataset: Dataset,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int | None = None,
    on_batch: ProgressCallback | None = None,
    on_skip: SkipCallback | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Image embeddings [N, D] and labels [N] in dataset order.

    An unreadable image stops the build with a `BadImageError`, unless `on_skip` is given: then it is left out and
    reported through it."""
    batches = BatchSampler(SequentialSampler(range(len(dataset))), batch_size, drop_last=False)
    chunks, labels = [], []
    for images, batch_labels, bad in _embedded_batches(model, dataset, batches, num_workers):
        pass_on_bad(bad, dataset, on_skip)
        if images is not None:
            chunks.append(images)
            labels.append(batch_labels)
        if on_batch is not None:
            on_batch(len(batch_labels) + len(bad))
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return np.concatenate(chunks), np.concatenate(labels).astype(np.int64)


def draft_min_size(model: Model) -> int | None:
    """The side draft-decoded images are reduced to for `model` (its input side; `decode_image` says how, and
    benchmarks/build_throughput.py measures the speed and the embedding change), or None when it is unknown."""
    return model.image_input_size()


@contextmanager
def _decoding_at(dataset: Dataset, min_size: int | None) -> Iterator[None]:
    # Set on the dataset, so it travels with it into DataLoader workers (and Ray tasks) that call `read_item`.
    previous = dataset.min_image_size
    dataset.min_image_size = min_size
    try:
        yield
    finally:
        dataset.min_image_size = previous


def compute_embeddings(
    model: Model,
    dataset: Dataset,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int | None = None,
    on_batch: ProgressCallback | None = None,
    on_skip: SkipCallback | None = None,
    draft_decode: bool = False,
) -> Embeddings:
    """Image embeddings, class (prompt) embeddings and labels of one dataset split; nothing is written.

    Unreadable images stop it, or with `on_skip` are left out and reported through it (see `embed_images`).
    `draft_decode` lets images decode at reduced scale and shrink to the model's input side before its own
    preprocessing (`decode_image`): faster on photos, with slightly different pixels and hence embeddings."""
    check_not_empty(dataset)
    classes = embed_class_prompts(model, dataset.prompts) if dataset.class_names else None
    if classes is not None:
        check_distinct_classes(classes, dataset.class_names, model.title)
    with _decoding_at(dataset, draft_min_size(model) if draft_decode else None):
        images, labels = embed_images(model, dataset, batch_size, num_workers, on_batch, on_skip)
    check_some_read(dataset, len(labels))
    check_labelled(dataset, labels)
    return Embeddings(images=images, labels=labels, classes=classes)


def check_not_empty(dataset: Dataset) -> None:
    if len(dataset) == 0:
        raise TTIEvalError(
            f"The {dataset.split.value} split of dataset '{dataset.title}' has no images; choose another with --split."
        )


def check_some_read(dataset: Dataset, num_read: int) -> None:
    if num_read == 0:
        raise TTIEvalError(
            f"No image of the {dataset.split.value} split of dataset '{dataset.title}' could be read; check its files."
        )


def check_labelled(dataset: Dataset, labels: np.ndarray) -> None:
    if labels.size and labels.min() < 0:  # e.g. a hub test split published without its labels (-1)
        raise TTIEvalError(
            f"The {dataset.split.value} split of dataset '{dataset.title}' has unlabelled images; it cannot be scored."
        )


def _versions() -> dict[str, str]:
    packages = ("tti-eval", "torch", "transformers", "open_clip_torch", "datasets")
    return {"python": platform.python_version(), **package_versions(packages)}


def build_metadata(
    definition: EmbeddingDefinition,
    split: Split,
    dataset: Dataset,
    shape: tuple[int, int],
    skipped_images: Sequence[tuple[str, str]] = (),
    draft_decode: bool = False,
) -> dict:
    """What a cached split records about itself; `skipped_images` are the (image, reason) pairs a build left out."""
    return {
        "fingerprint": build_fingerprint(definition, dataset, draft_decode),
        "carving": dataset.carving,
        "model": ModelProvider.registry.spec(definition.model).model_dump(mode="json", exclude_none=True),
        "dataset": DatasetProvider.registry.spec(definition.dataset).model_dump(mode="json", exclude_none=True),
        "split": Split(split).value,
        "class_names": list(dataset.class_names),
        "templates": list(dataset.templates),
        "prompts": dataset.prompts,
        "num_images": int(shape[0]),
        "skipped_images": [{"image": image, "reason": reason} for image, reason in skipped_images],
        "draft_decode": draft_decode,
        "dim": int(shape[1]),
        "versions": _versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


class Engine(Protocol):
    """Where a split's embeddings are computed: in this process (`LocalEngine`) or on a Ray cluster
    (`tti_eval.ray_engine.RayEngine`). Both write the same shards, so either can resume the other's work."""

    def embed_classes(self, dataset: Dataset) -> np.ndarray | None:
        """One embedding per class of the dataset's prompts, or None for a dataset without class names."""

    def embed_shards(
        self, dataset: Dataset, store: ShardStore, on_images: ProgressCallback, on_skip: SkipCallback | None
    ) -> None:
        """Embed and write every shard `store` is missing, reporting the images done as they finish; unreadable
        images stop it, or with `on_skip` are left out of their shard and reported through it."""


class LocalEngine:
    """The in-process engine: DataLoader workers decode and preprocess, the model runs here.

    The model is loaded (by `load_model`, e.g. a cached loader shared across pairs) on first use only."""

    def __init__(
        self,
        load_model: Callable[[], Model],
        batch_size: int = DEFAULT_BATCH_SIZE,
        num_workers: int | None = None,
        draft_decode: bool = False,
    ):
        self.load_model = load_model
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.draft_decode = draft_decode

    def embed_classes(self, dataset: Dataset) -> np.ndarray | None:
        return embed_class_prompts(self.load_model(), dataset.prompts) if dataset.class_names else None

    def embed_shards(
        self, dataset: Dataset, store: ShardStore, on_images: ProgressCallback, on_skip: SkipCallback | None
    ) -> None:
        todo = store.missing()
        if not todo:
            return
        model = self.load_model()
        # Batches never straddle two shards, so each shard is complete after a whole number of batches.
        batches = (
            list(rows[start : start + self.batch_size])
            for rows in map(store.rows, todo)
            for start in range(0, len(rows), self.batch_size)
        )
        shards = iter(todo)
        shard, images, labels, skipped, done = next(shards, None), [], [], [], 0
        with _decoding_at(dataset, draft_min_size(model) if self.draft_decode else None):
            for batch_images, batch_labels, bad in _embedded_batches(model, dataset, batches, self.num_workers):
                pass_on_bad(bad, dataset, on_skip)
                skipped += [(item["bad"], item["reason"]) for item in bad]
                if batch_images is not None:
                    images.append(batch_images)
                    labels.append(batch_labels)
                done += len(batch_labels) + len(bad)
                on_images(len(batch_labels) + len(bad))
                if done == len(store.rows(shard)):
                    write_shard(store, dataset, shard, images, labels, skipped)
                    shard, images, labels, skipped, done = next(shards, None), [], [], [], 0


def write_shard(
    store: ShardStore,
    dataset: Dataset,
    shard: int,
    images: list[np.ndarray],
    labels: list[np.ndarray],
    skipped: list[tuple[str, str]],
) -> None:
    """Check a finished shard's labels (an unlabelled split fails at its first shard, not at its end) and write it."""
    all_labels = np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64)
    check_labelled(dataset, all_labels)
    all_images = np.concatenate(images) if images else np.zeros((0, 0), np.float32)
    store.write(shard, all_images, all_labels, skipped)


class BuildInterrupted(KeyboardInterrupt):
    """Ctrl-C during a split, carrying the sentence that says what a rerun will redo."""


def shard_store(
    definition: EmbeddingDefinition,
    split: Split,
    dataset: Dataset,
    shard_size: int = DEFAULT_SHARD_SIZE,
    draft_decode: bool = False,
    discard: bool = False,
) -> ShardStore:
    """The split's shard folder; shards are reused only by a build with the same fingerprint (definitions, image
    files, libraries), split, number of images, shard size and decoding, and never when `discard`."""
    key = shard_key(
        model=ModelProvider.registry.spec(definition.model).model_dump(mode="json", exclude_none=True),
        dataset=DatasetProvider.registry.spec(definition.dataset).model_dump(mode="json", exclude_none=True),
        fingerprint=build_fingerprint(definition, dataset, draft_decode),
        split=Split(split).value,
        num_images=len(dataset),
        shard_size=shard_size,
        draft_decode=draft_decode,
    )
    return ShardStore(embedding_path(definition, split), key, len(dataset), shard_size, discard=discard)


def _build_split(
    definition: EmbeddingDefinition,
    dataset: Dataset,
    open_store: Callable[[], ShardStore],
    engine: Engine,
    progress: SplitProgress | None,
    note: NoteCallback,
    on_skip: SkipCallback | None,
    draft_decode: bool,
) -> Embeddings:
    check_not_empty(dataset)
    # The model loads (for the class embeddings) before the shards' folder is written: a model that cannot load, or
    # a disk too full for its checkpoint, fails before anything is written.
    classes = engine.embed_classes(dataset)
    if classes is not None:
        check_distinct_classes(classes, dataset.class_names, definition.model)
    store = open_store()
    split, total, resumed = dataset.split, len(dataset), store.resumed_images()
    if resumed:
        note(split, f"resuming: {resumed:,} of {total:,} images already embedded")
    done = resumed

    def advance(images: int) -> None:
        nonlocal done
        done += images
        if progress is not None:
            progress(split, done, total, resumed)

    try:
        advance(0)
        engine.embed_shards(dataset, store, advance, on_skip)
    except KeyboardInterrupt:
        left = total - store.resumed_images()
        raise BuildInterrupted(
            f"Interrupted: {total - left:,} of {total:,} {split.value} images of {definition} are embedded and kept; "
            f"a rerun embeds only the other {left:,} (and any split not built yet)."
        ) from None
    labels = store.labels()
    check_some_read(dataset, len(labels))
    shape = (len(labels), store.dim())
    metadata = build_metadata(definition, split, dataset, shape, store.skipped(), draft_decode)
    save_embeddings_streamed(definition, split, store.image_chunks(), shape, labels, classes, metadata)
    store.remove()
    return load_embeddings(definition, split)


def build_embeddings(
    definition: EmbeddingDefinition,
    splits: Iterable[Split] = DEFAULT_SPLITS,
    *,
    overwrite: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int | None = None,
    device: str | None = None,
    load_model: Callable[[], Model] | None = None,
    progress: SplitProgress | None = None,
    skip_bad_images: bool = False,
    on_skip: SkipCallback | None = None,
    draft_decode: bool = False,
    on_note: NoteCallback | None = None,
    engine: Engine | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> dict[Split, Embeddings | None]:
    """Build and cache the given splits of one pair; a split already cached is skipped (None) unless `overwrite`
    or it is stale (its fingerprint no longer matches the definitions, files or libraries: `tti_eval.provenance`).

    The datasets are opened first, so a dataset that cannot load fails before any model weights are read. Without an
    `engine`, the splits are embedded in this process (`LocalEngine` with `load_model`, e.g. a loader shared across
    pairs, `batch_size`, `num_workers`, `device`, `draft_decode`); the model is loaded only if some split needs
    building. Each split is written in shards of `shard_size` images, so an interrupted build keeps the finished
    splits and shards and a rerun embeds only the rest (`overwrite` discards them too); each split's file appears
    atomically when that split is complete. `progress` hears (split, images done, images in the split, images of
    them resumed from an earlier run's shards). `on_note` hears why a split is rebuilt, how a carved split was cut
    from train and how much of it is resumed. An unreadable image stops the build before its split is written,
    unless `skip_bad_images`: then it is left out, recorded in the split's metadata and passed to `on_skip`.
    `draft_decode`: see `compute_embeddings`; recorded in the metadata."""
    note = on_note or (lambda split, text: None)
    results: dict[Split, Embeddings | None] = {}
    todo: dict[Split, Dataset | None] = {}
    memo: Memo = {}  # the splits share definitions and folders: each is read or stat'ed once
    for split in map(Split, splits):
        path = embedding_path(definition, split)
        remove_stale_temp_files(path.parent)
        if not path.is_file() or overwrite:
            todo[split] = None
            continue
        if kept_as_cached(definition, split, draft_decode, memo):
            results[split] = None
            continue
        try:
            array_shapes(definition, split)
        except CacheError:  # a 0-byte or truncated file is not "already cached"
            note(split, "is damaged or incomplete; rebuilding it")
            todo[split] = None
            continue
        dataset = DatasetProvider.get_dataset(definition.dataset, split)
        state = split_state(definition, split, current=build_fingerprint(definition, dataset, draft_decode))
        if state.status == "stale":
            note(split, f"is stale ({'; '.join(state.reasons)}); rebuilding it")
            todo[split] = dataset
        else:
            results[split] = None
    if not todo:
        return results
    datasets = {
        split: loaded if loaded is not None else DatasetProvider.get_dataset(definition.dataset, split)
        for split, loaded in todo.items()
    }
    if engine is None:
        loader = load_model or partial(ModelProvider.get_model, definition.model, device=device)
        engine = LocalEngine(cache(loader), batch_size, num_workers, draft_decode)
    skip = (on_skip or (lambda image, reason: None)) if skip_bad_images else None
    for split, dataset in datasets.items():
        if dataset.carving is not None:
            note(split, describe_carving(dataset.carving))
        store = partial(shard_store, definition, split, dataset, shard_size, draft_decode, discard=overwrite)
        results[split] = _build_split(definition, dataset, store, engine, progress, note, skip, draft_decode)
    return results


class BuildProgress(NamedTuple):
    """One step of `build_pairs`: `split` None while the pair's model loads, else images embedded of that split, of
    which `resumed` were already embedded in the shards an interrupted run left."""

    pair: EmbeddingDefinition
    split: Split | None
    done: int
    total: int
    resumed: int = 0


class PairBuild(NamedTuple):
    pair: EmbeddingDefinition
    built: dict[Split, bool]  # per split: True if built now, False if it was already cached


class BuildRun(NamedTuple):
    """What `build_pairs` did, symmetric with evaluation's `EvaluationRun`."""

    results: list[PairBuild]  # every pair whose splits are now all cached
    problems: list[str]  # one sentence per pair that failed, starting with the pair

    @property
    def failed(self) -> int:
        return len(self.problems)


def _once(make: Callable[[], _T]) -> Callable[[], _T]:
    """`make` called on first use only; every later use gets the same result, or the same failure (a hub that timed
    out once is not asked again for each dataset, nor a cluster that refused to be joined)."""
    outcome: list[_T | BaseException] = []

    def get() -> _T:
        if not outcome:
            try:
                outcome.append(make())
            except Exception as e:
                outcome.append(e)
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    return get


def _load_once(title: str, device: str | None, on_load: Callable[[], None]) -> Callable[[], Model]:
    """A loader that loads the model on first use and gives every later pair the same model, or the same failure."""

    def load() -> Model:
        on_load()
        return ModelProvider.get_model(title, device=device)

    return _once(load)


class _EngineOnFirstUse:
    """The engine `make` gives, made when a split first needs building: a build whose splits are all cached starts
    nothing (for Ray: no session, no actors)."""

    def __init__(self, make: Callable[[], Engine]):
        self._engine = _once(make)

    def embed_classes(self, dataset: Dataset) -> np.ndarray | None:
        return self._engine().embed_classes(dataset)

    def embed_shards(
        self, dataset: Dataset, store: ShardStore, on_images: ProgressCallback, on_skip: SkipCallback | None
    ) -> None:
        self._engine().embed_shards(dataset, store, on_images, on_skip)


def build_pairs(
    pairs: Sequence[EmbeddingDefinition],
    splits: Iterable[Split] = DEFAULT_SPLITS,
    *,
    overwrite: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int | None = None,
    device: str | None = None,
    progress: Callable[[BuildProgress], None] | None = None,
    on_pair: Callable[[PairBuild | str], None] | None = None,
    on_note: Callable[[EmbeddingDefinition, Split, str], None] | None = None,
    skip_bad_images: bool = False,
    on_skip: SkipCallback | None = None,
    draft_decode: bool = False,
    reraise: bool = False,
    engine: Literal["local", "ray"] = "local",
    address: str | None = None,
    workers: int | None = None,
    gpus_per_worker: float | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    on_ray_start: Callable[[], None] | None = None,
) -> BuildRun:
    """Build (or find cached) `splits` of every pair; each model is loaded at most once for all its pairs.

    A pair that fails is reported in `problems` in one sentence and the others still build. A user error
    (`TTIEvalError`) is its own sentence; anything else is a bug: its traceback is logged, and with `reraise` it is
    raised instead. `on_pair` receives each pair's result, or its problem sentence, as soon as it is known;
    `on_note` a line about one split worth telling (why it is rebuilt, how a carved split was cut, how many of its
    images an interrupted run already embedded). `skip_bad_images`, `on_skip`, `draft_decode` and `shard_size` are
    `build_embeddings`'s.

    `engine` "local" embeds in this process (`device`, `num_workers`, `skip_bad_images` and `draft_decode` apply to
    it only); "ray" on the Ray cluster at `address` (default: a local Ray started for this call; see
    `tti_eval.ray_engine`) with `workers` model actors of `gpus_per_worker` GPUs each, started when a split first
    needs building (`on_ray_start` hears it; a build with every split cached starts no Ray). Both write the same
    shards, so either resumes the other's interrupted split."""
    splits = list(dict.fromkeys(Split(s) for s in splits))
    results: list[PairBuild] = []
    problems: list[str] = []
    with ExitStack() as stack:
        if engine == "ray":
            from tti_eval.ray_engine import RayEngine, ray_session

            def start_ray() -> None:
                if on_ray_start is not None:
                    on_ray_start()
                stack.enter_context(ray_session(address))

            ray_started = _once(start_ray)

        # Pairs of one model run back to back and share one loader (or engine), so each model is loaded at most once.
        for model_title in dict.fromkeys(pair.model for pair in pairs):
            model_pairs = [p for p in pairs if p.model == model_title]
            first = model_pairs[0]  # a loading step names the model; any of its pairs will do
            on_load = partial(_report, progress, first, None, 0, 0)
            if engine == "ray":
                # one engine for the model's pairs, made on first use inside a pair's try: a bad option is that
                # pair's problem

                def ray_engine(model_title: str = model_title, on_load: Callable[[], None] = on_load) -> Engine:
                    ray_started()
                    return RayEngine(
                        model_title,
                        workers=workers,
                        gpus_per_worker=gpus_per_worker,
                        batch_size=batch_size,
                        on_load=on_load,
                    )

                model_engine: Engine = _EngineOnFirstUse(ray_engine)
            else:
                load = _load_once(model_title, device, on_load)
                model_engine = LocalEngine(load, batch_size, num_workers, draft_decode)
            for pair in model_pairs:
                try:
                    built = build_embeddings(
                        pair,
                        splits,
                        overwrite=overwrite,
                        engine=model_engine,
                        skip_bad_images=skip_bad_images,
                        on_skip=on_skip,
                        draft_decode=draft_decode,
                        shard_size=shard_size,
                        progress=lambda split, *counts, pair=pair: _report(progress, pair, split, *counts),
                        on_note=(lambda split, text, pair=pair: on_note(pair, split, text)) if on_note else None,
                    )
                except TTIEvalError as e:
                    outcome: PairBuild | str = f"{pair}: {e}"
                except Exception as e:  # one broken pair must not stop the others, nor hide its traceback
                    if reraise:
                        raise
                    logger.exception("Building %s failed with an unexpected error:", pair)
                    outcome = f"{pair}: {type(e).__name__}: {e} (an unexpected error; its traceback is logged above)."
                else:
                    outcome = PairBuild(pair, {split: result is not None for split, result in built.items()})
                (problems if isinstance(outcome, str) else results).append(outcome)
                if on_pair is not None:
                    on_pair(outcome)
    return BuildRun(results, problems)


def _report(
    progress: Callable[[BuildProgress], None] | None,
    pair: EmbeddingDefinition,
    split: Split | None,
    done: int,
    total: int,
    resumed: int = 0,
) -> None:
    if progress is not None:
        progress(BuildProgress(pair, split, done, total, resumed))


def compute_embeddings_from_definition(definition: EmbeddingDefinition, split: Split, **kwargs: Any) -> Embeddings:
    """Build one split of a pair, cache it (replacing any cached file) and return it."""
    result = build_embeddings(definition, [split], overwrite=True, **kwargs)[Split(split)]
    assert result is not None
    return result
