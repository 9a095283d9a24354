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
from tti_eval.model import ModelProvider
from tti_eval.model.base import Model
from tti_eval.shards import DEFAULT_SHARD_SIZE, ShardStore, shard_key

DEFAULT_SPLITS = (Split.TRAIN, Split.VALIDATION)
DEFAULT_BATCH_SIZE = 32

ProgressCallback = Callable[[int], None]


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


class _RawItems(TorchDataset):
    """The dataset's untransformed (image, label) items: the engine's preprocessing must not depend on whatever
    transform a notebook user set on the dataset."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, label = self.dataset.get_image_and_label(index)
        return {"image": image, "label": label}


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
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(image embeddings, labels) of each batch of dataset indices, in the order given."""
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
            yield model.embed_images(batch["pixel_values"]), batch["labels"].numpy()


def embed_images(
    model: Model,
    dataset: Dataset,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int | None = None,
    on_batch: ProgressCallback | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Image embeddings [N, D] and labels [N] in dataset order."""
    batches = BatchSampler(SequentialSampler(range(len(dataset))), batch_size, drop_last=False)
    chunks, labels = [], []
    for images, batch_labels in _embedded_batches(model, dataset, batches, num_workers):
        chunks.append(images)
        labels.append(batch_labels)
        if on_batch is not None:
            on_batch(len(batch_labels))
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return np.concatenate(chunks), np.concatenate(labels).astype(np.int64)


def compute_embeddings(
    model: Model,
    dataset: Dataset,
    batch_size: int = DEFAULT_BATCH_SIZE,
    num_workers: int | None = None,
    on_batch: ProgressCallback | None = None,
) -> Embeddings:
    """Image embeddings, class (prompt) embeddings and labels of one dataset split; nothing is written."""
    check_not_empty(dataset)
    classes = embed_class_prompts(model, dataset.prompts) if dataset.class_names else None
    images, labels = embed_images(model, dataset, batch_size, num_workers, on_batch)
    check_labelled(dataset, labels)
    return Embeddings(images=images, labels=labels, classes=classes)


def check_not_empty(dataset: Dataset) -> None:
    if len(dataset) == 0:
        raise TTIEvalError(
            f"The {dataset.split.value} split of dataset '{dataset.title}' has no images; choose another with --split."
        )


def check_labelled(dataset: Dataset, labels: np.ndarray) -> None:
    if labels.size and labels.min() < 0:  # e.g. a hub test split published without its labels (-1)
        raise TTIEvalError(
            f"The {dataset.split.value} split of dataset '{dataset.title}' has unlabelled images; it cannot be scored."
        )


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("tti-eval", "torch", "transformers", "open_clip_torch", "datasets"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def build_metadata(definition: EmbeddingDefinition, split: Split, dataset: Dataset, shape: tuple[int, int]) -> dict:
    return {
        "model": ModelProvider.registry.spec(definition.model).model_dump(mode="json", exclude_none=True),
        "dataset": DatasetProvider.registry.spec(definition.dataset).model_dump(mode="json", exclude_none=True),
        "split": Split(split).value,
        "class_names": list(dataset.class_names),
        "templates": list(dataset.templates),
        "prompts": dataset.prompts,
        "num_images": int(shape[0]),
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

    def embed_shards(self, dataset: Dataset, store: ShardStore, on_images: ProgressCallback) -> None:
        """Embed and write every shard `store` is missing, reporting the images done as they finish."""


class LocalEngine:
    """The in-process engine: DataLoader workers decode and preprocess, the model runs here.

    The model is loaded (by `load_model`, e.g. a cached loader shared across pairs) on first use only."""

    def __init__(
        self,
        load_model: Callable[[], Model],
        batch_size: int = DEFAULT_BATCH_SIZE,
        num_workers: int | None = None,
    ):
        self.load_model = load_model
        self.batch_size = batch_size
        self.num_workers = num_workers

    def embed_classes(self, dataset: Dataset) -> np.ndarray | None:
        return embed_class_prompts(self.load_model(), dataset.prompts) if dataset.class_names else None

    def embed_shards(self, dataset: Dataset, store: ShardStore, on_images: ProgressCallback) -> None:
        todo = store.missing()
        if not todo:
            return
        # Batches never straddle two shards, so each shard is complete after a whole number of batches.
        batches = (
            list(rows[start : start + self.batch_size])
            for rows in map(store.rows, todo)
            for start in range(0, len(rows), self.batch_size)
        )
        shards = iter(todo)
        shard, images, labels = next(shards, None), [], []
        for batch_images, batch_labels in _embedded_batches(self.load_model(), dataset, batches, self.num_workers):
            images.append(batch_images)
            labels.append(batch_labels)
            on_images(len(batch_labels))
            if sum(map(len, labels)) == len(store.rows(shard)):
                write_shard(store, dataset, shard, np.concatenate(images), np.concatenate(labels))
                shard, images, labels = next(shards, None), [], []


def write_shard(store: ShardStore, dataset: Dataset, shard: int, images: np.ndarray, labels: np.ndarray) -> None:
    """Check a finished shard's labels (an unlabelled split fails at its first shard, not at its end) and write it."""
    check_labelled(dataset, labels)
    store.write(shard, images, labels.astype(np.int64))


class BuildInterrupted(KeyboardInterrupt):
    """Ctrl-C during a split, carrying the sentence that says what a rerun will redo."""


def _shard_key(definition: EmbeddingDefinition, split: Split, num_images: int, shard_size: int) -> str:
    return shard_key(
        model=ModelProvider.registry.spec(definition.model).model_dump(mode="json", exclude_none=True),
        dataset=DatasetProvider.registry.spec(definition.dataset).model_dump(mode="json", exclude_none=True),
        split=Split(split).value,
        num_images=num_images,
        shard_size=shard_size,
    )


def _build_split(
    definition: EmbeddingDefinition, split: Split, engine: Engine, progress: Progress, shard_size: int
) -> Embeddings:
    dataset = DatasetProvider.get_dataset(definition.dataset, split)
    check_not_empty(dataset)
    total = len(dataset)
    store = ShardStore(
        embedding_path(definition, split), _shard_key(definition, split, total, shard_size), total, shard_size
    )
    resumed = store.resumed_images()
    if resumed:
        progress.console.print(
            f"{definition} ({split.value}): resuming, {resumed:,} of {total:,} images already embedded", highlight=False
        )
    task = progress.add_task(f"{definition} ({split.value})", total=total, completed=resumed)
    try:
        classes = engine.embed_classes(dataset)
        engine.embed_shards(dataset, store, partial(progress.advance, task))
    except KeyboardInterrupt:
        left = total - store.resumed_images()
        raise BuildInterrupted(
            f"Interrupted: {total - left:,} of {total:,} {split.value} images of {definition} are embedded and kept; "
            f"a rerun embeds only the other {left:,} (and any split not built yet)."
        ) from None
    finally:
        progress.remove_task(task)
    shape = (total, store.dim())
    save_embeddings_streamed(
        definition,
        split,
        store.image_chunks(),
        shape,
        store.labels(),
        classes,
        build_metadata(definition, split, dataset, shape),
    )
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
    engine: Engine | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> dict[Split, Embeddings | None]:
    """Build and cache the given splits of one pair; a split already cached is skipped (None) unless `overwrite`.

    Without an `engine`, the split is embedded in this process (`LocalEngine` with `load_model`, `batch_size`,
    `num_workers`, `device`); the model is loaded only if some split needs building. Each split is written in
    shards of `shard_size` images, so an interrupted build keeps the finished splits and shards and a rerun
    embeds only the rest; each split's file appears atomically when that split is complete."""
    results: dict[Split, Embeddings | None] = {}
    todo = []
    for split in splits:
        path = embedding_path(definition, split)
        remove_stale_temp_files(path.parent)
        if path.is_file() and not overwrite:
            results[Split(split)] = None
        else:
            todo.append(Split(split))
    if not todo:
        return results
    if engine is None:
        loader = load_model or partial(ModelProvider.get_model, definition.model, device=device)
        engine = LocalEngine(functools.cache(loader), batch_size, num_workers)
    owns_progress = progress is None
    progress = progress or new_progress()
    with progress if owns_progress else nullcontext():
        for split in todo:
            results[split] = _build_split(definition, split, engine, progress, shard_size)
    return results


def compute_embeddings_from_definition(definition: EmbeddingDefinition, split: Split, **kwargs: Any) -> Embeddings:
    """Build one split of a pair, cache it (replacing any cached file) and return it."""
    result = build_embeddings(definition, [split], overwrite=True, **kwargs)[Split(split)]
    assert result is not None
    return result
