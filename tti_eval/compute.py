"""The build engine: images and prompts in, cached L2-normalised embeddings out.

Preprocessing happens in DataLoader workers, one processor call per batch, through the model's weight-free
preprocessor; the network runs on the main process's device under `torch.inference_mode`. The model object never
reaches a worker or a `datasets` fingerprint, which is what made the original tool pickle every weight per call.
"""

import functools
import os
import platform
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler
from torch.utils.data import Dataset as TorchDataset

from tti_eval.common import EmbeddingDefinition, Embeddings, Split, TTIEvalError
from tti_eval.common.atomic import remove_stale_temp_files
from tti_eval.common.cache import embedding_path, load_embeddings, save_embeddings_streamed
from tti_eval.common.malloc import freed_memory_kept
from tti_eval.dataset import DatasetProvider
from tti_eval.dataset.base import Dataset
from tti_eval.dataset.images import BadImageError, to_rgb
from tti_eval.dataset.splits import describe_carving
from tti_eval.model import ModelProvider
from tti_eval.model.base import Model
from tti_eval.provenance import build_fingerprint, package_versions, split_state
from tti_eval.shards import DEFAULT_SHARD_SIZE, ShardStore, shard_key

DEFAULT_SPLITS = (Split.TRAIN, Split.VALIDATION)
DEFAULT_BATCH_SIZE = 32
# Draft decoding keeps at least twice the model's input side, so that the model's own antialiased resize still does
# the final reduction (benchmarks/build_throughput.py measures the speed and the embedding change).
DRAFT_OVERSAMPLING = 2

ProgressCallback = Callable[[int], None]
SkipCallback = Callable[[str, str], None]  # (image name, reason)
NoteCallback = Callable[[Split, str], None]  # one line about a split worth telling the user (why it is rebuilt, ...)


def default_num_workers(device: torch.device) -> int:
    """Workers that decode and preprocess images while the model runs.

    On an accelerator the model is fast and decoding decides the speed, so use the cores. On a CPU the forward pass
    wants every core: a worker preempts one of its threads at each synchronisation point and costs more than doing
    the (comparatively cheap) preprocessing in between batches, so small machines use none."""
    cores = os.cpu_count() or 1
    if device.type == "cpu":
        return 0 if cores <= 4 else min(4, cores // 4)
    return min(8, max(1, cores - 1))


@contextmanager
def _cores_left_to_the_model(device: torch.device, workers: int) -> Iterator[None]:
    """On a CPU, let the forward pass use only the cores the workers leave free, so the two never fight."""
    previous = torch.get_num_threads()
    if device.type == "cpu" and workers:
        torch.set_num_threads(max(1, min(previous, (os.cpu_count() or 1) - workers)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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
    """(image embeddings or None, labels, unreadable items) of each batch of dataset indices, in the order given."""
    workers = default_num_workers(model.device) if num_workers is None else num_workers
    loader = DataLoader(
        _RawItems(dataset),
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=model.get_collate_fn(),
        pin_memory=model.device.type == "cuda",
        worker_init_fn=_single_threaded_worker if workers else None,
        prefetch_factor=4 if workers else None,
    )
    with _cores_left_to_the_model(model.device, workers), freed_memory_kept():
        for batch in loader:
            images = model.embed_images(batch["pixel_values"]) if batch["pixel_values"] is not None else None
            yield images, batch["labels"].numpy(), batch["bad"]


def _pass_on_bad(bad: list[dict[str, str]], dataset: Dataset, on_skip: SkipCallback | None) -> None:
    for item in bad:
        if on_skip is None:
            raise BadImageError(item["bad"], dataset.title, item["reason"])
        on_skip(item["bad"], item["reason"])


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
        _pass_on_bad(bad, dataset, on_skip)
        if images is not None:
            chunks.append(images)
            labels.append(batch_labels)
        if on_batch is not None:
            on_batch(len(batch_labels) + len(bad))
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return np.concatenate(chunks), np.concatenate(labels).astype(np.int64)


def draft_min_size(model: Model) -> int | None:
    """The smallest side a draft-decoded image may have for `model`, or None when its input size is unknown."""
    size = model.image_input_size()
    return DRAFT_OVERSAMPLING * size if size else None


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
    `draft_decode` lets large JPEGs decode at 1/2 to 1/8 scale, never below `DRAFT_OVERSAMPLING` times the model's
    input: several times faster on photos, with slightly different pixels and hence embeddings."""
    check_not_empty(dataset)
    classes = embed_class_prompts(model, dataset.prompts) if dataset.class_names else None
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
        "fingerprint": build_fingerprint(definition, dataset),
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


class _ImagesPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:,.1f} img/s" if task.speed else "… img/s", style="progress.data.speed")


def new_progress() -> Progress:
    """The build's progress display: one bar per (pair, split) with images/s and ETA."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _ImagesPerSecond(),
        TimeRemainingColumn(),
        transient=True,
    )


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
                _pass_on_bad(bad, dataset, on_skip)
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
    definition: EmbeddingDefinition, split: Split, dataset: Dataset, shard_size: int, draft_decode: bool = False
) -> ShardStore:
    """The split's shard folder; shards are reused only by a build with the same fingerprint (definitions, image
    files, libraries), split, number of images, shard size and decoding."""
    key = shard_key(
        model=ModelProvider.registry.spec(definition.model).model_dump(mode="json", exclude_none=True),
        dataset=DatasetProvider.registry.spec(definition.dataset).model_dump(mode="json", exclude_none=True),
        fingerprint=build_fingerprint(definition, dataset),
        split=Split(split).value,
        num_images=len(dataset),
        shard_size=shard_size,
        draft_decode=draft_decode,
    )
    return ShardStore(embedding_path(definition, split), key, len(dataset), shard_size)


def _build_split(
    definition: EmbeddingDefinition,
    split: Split,
    dataset: Dataset,
    engine: Engine,
    progress: Progress,
    shard_size: int,
    on_skip: SkipCallback | None,
    draft_decode: bool,
) -> Embeddings:
    check_not_empty(dataset)
    total = len(dataset)
    store = shard_store(definition, split, dataset, shard_size, draft_decode)
    resumed = store.resumed_images()
    if resumed:
        progress.console.print(
            f"{definition} ({split.value}): resuming, {resumed:,} of {total:,} images already embedded", highlight=False
        )
    task = progress.add_task(f"{definition} ({split.value})", total=total, completed=resumed)
    try:
        classes = engine.embed_classes(dataset)
        engine.embed_shards(dataset, store, partial(progress.advance, task), on_skip)
    except KeyboardInterrupt:
        left = total - store.resumed_images()
        raise BuildInterrupted(
            f"Interrupted: {total - left:,} of {total:,} {split.value} images of {definition} are embedded and kept; "
            f"a rerun embeds only the other {left:,} (and any split not built yet)."
        ) from None
    finally:
        progress.remove_task(task)
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
    progress: Progress | None = None,
    skip_bad_images: bool = False,
    on_skip: SkipCallback | None = None,
    draft_decode: bool = False,
    on_note: NoteCallback | None = None,
    engine: Engine | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> dict[Split, Embeddings | None]:
    """Build and cache the given splits of one pair; a split already cached is skipped (None) unless `overwrite`
    or it is stale (its fingerprint no longer matches the definitions, files or libraries: `tti_eval.provenance`).

    Without an `engine`, the split is embedded in this process (`LocalEngine` with `load_model`, `batch_size`,
    `num_workers`, `device`, `draft_decode`); the model is loaded only if some split needs building. Each split is
    written in shards of `shard_size` images, so an interrupted build keeps the finished splits and shards and a
    rerun embeds only the rest; each split's file appears atomically when that split is complete. `on_note` hears
    why a split is rebuilt and how a carved split was cut from train. An unreadable image stops the build before its
    split is written, unless `skip_bad_images`: then it is left out, recorded in the split's metadata and passed to
    `on_skip`. `draft_decode`: see `compute_embeddings`; recorded in the metadata."""
    note = on_note or (lambda split, text: None)
    results: dict[Split, Embeddings | None] = {}
    todo: dict[Split, Dataset | None] = {}
    for split in map(Split, splits):
        path = embedding_path(definition, split)
        remove_stale_temp_files(path.parent)
        if not path.is_file() or overwrite:
            todo[split] = None
            continue
        dataset = DatasetProvider.get_dataset(definition.dataset, split)
        state = split_state(definition, split, current=build_fingerprint(definition, dataset))
        if state.status == "stale":
            note(split, f"is stale ({'; '.join(state.reasons)}); rebuilding it")
            todo[split] = dataset
        else:
            results[split] = None
    if not todo:
        return results
    if engine is None:
        loader = load_model or partial(ModelProvider.get_model, definition.model, device=device)
        engine = LocalEngine(functools.cache(loader), batch_size, num_workers, draft_decode)
    owns_progress = progress is None
    progress = progress or new_progress()
    with progress if owns_progress else nullcontext():
        for split, loaded in todo.items():
            dataset = loaded if loaded is not None else DatasetProvider.get_dataset(definition.dataset, split)
            if dataset.carving is not None:
                note(split, describe_carving(dataset.carving))
            skip = on_skip or (lambda image, reason: None) if skip_bad_images else None
            results[split] = _build_split(definition, split, dataset, engine, progress, shard_size, skip, draft_decode)
    return results


def compute_embeddings_from_definition(definition: EmbeddingDefinition, split: Split, **kwargs: Any) -> Embeddings:
    """Build one split of a pair, cache it (replacing any cached file) and return it."""
    result = build_embeddings(definition, [split], overwrite=True, **kwargs)[Split(split)]
    assert result is not None
    return result
