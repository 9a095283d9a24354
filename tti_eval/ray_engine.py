"""`tti-eval build --engine ray`: the in-process build's pipeline on a Ray cluster, local or joined with `--address`.

Ray Data runs it: CPU tasks read items by index and run the model's weight-free preprocessor; an actor pool holds
the model (one actor per GPU, or per CPU worker) and embeds; the driver gathers the results by index (Ray Data does
not keep order) into the split's shards, the same shards the in-process engine writes, so a restarted driver resumes
and the final file is assembled by the same code. Nothing else in tti-eval imports Ray.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from PIL import Image

from tti_eval.common import TTIEvalError
from tti_eval.compute import (
    DEFAULT_BATCH_SIZE,
    ProgressCallback,
    SkipCallback,
    embed_class_prompts,
    pass_on_bad,
    read_item,
    write_shard,
)
from tti_eval.dataset.base import Dataset
from tti_eval.model import ModelProvider
from tti_eval.model.base import ImagePreprocessor, Model
from tti_eval.shards import ShardStore


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise TTIEvalError("--engine ray needs Ray; install it with `pip install -e '.[ray]'`.") from None
    return ray


@contextmanager
def ray_session(address: str | None = None) -> Iterator[None]:
    """Connect to the cluster at `address`, or start a local one on this machine; a session this opened is closed at
    the end, which also stops any work of it still running on the cluster (e.g. after Ctrl-C). A session that is
    already open (a notebook's `ray.init()`) is used as it is."""
    ray = _import_ray()
    if ray.is_initialized():
        yield
        return
    try:
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, ray.exceptions.AuthenticationError) as e:
        raise TTIEvalError(_connection_problem(address, e)) from None
    ray.data.DataContext.get_current().enable_progress_bars = False  # tti-eval's own bar shows the progress
    try:
        yield
    finally:
        ray.shutdown()


def _connection_problem(address: str | None, error: Exception) -> str:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if type(error).__name__ == "AuthenticationError":
        # Ray >= 2.59 sends the token in ~/.ray/auth_token (or RAY_AUTH_TOKEN) to a cluster that runs with tokens.
        return (
            f"The Ray cluster at {address} needs its token from this machine; copy it from the head node "
            "(`ray get-auth-token` there) into ~/.ray/auth_token or RAY_AUTH_TOKEN on this machine."
        )
    return f"Cannot join the Ray cluster at {address} ({reason}); start one with `ray start --head` or fix --address."


# Images the driver tries for one it can read, which every node must then read too.
_PROBED = 16


def _probe(dataset: Dataset, index: int) -> str | None:
    """Runs on a node: None when it can read the dataset's index-th image, else why not."""
    try:
        dataset.get_image_and_label(index)
    except Exception as e:  # any failure to read means the same thing to the user
        return f"{type(e).__name__}: {e}"
    return None


def _readable_index(dataset: Dataset) -> int:
    """The first of the first `_PROBED` images that reads here (0 if none does): a node that cannot read an image
    the driver reads cannot reach the source, whereas one damaged image is the build's to report (or skip)."""
    return next((i for i in range(min(len(dataset), _PROBED)) if "bad" not in read_item(dataset, i)), 0)


def _prepare(model_factory: Callable[[], Model], prompts: list[list[str]]) -> tuple[np.ndarray | None, Any]:
    """Runs where the model's actors run: class embeddings of `prompts`, and the weight-free preprocessor."""
    model = model_factory()
    classes = embed_class_prompts(model, prompts) if prompts else None
    return classes, model.get_image_preprocessor()


def _indices(row: dict[str, Any]) -> list[dict[str, int]]:
    return [{"index": index} for index in range(row["start"], row["stop"])]


def _read_and_preprocess(batch: dict[str, np.ndarray], dataset: Dataset, preprocess: ImagePreprocessor) -> dict:
    """An unreadable image travels on as data (its name in "bad", a blank stand-in for its pixels) to the driver,
    which raises or skips it: raised in a Ray task it would reach the user wrapped in Ray's traceback."""
    items = [read_item(dataset, int(index)) for index in batch["index"]]
    blank = Image.new("RGB", (1, 1))
    return {
        "index": batch["index"],
        "pixel_values": preprocess([item.get("image", blank) for item in items]).numpy(),
        "label": np.array([int(item.get("label", -1)) for item in items], dtype=np.int64),
        "bad": np.array([item.get("bad", "") for item in items], dtype=str),
        "reason": np.array([item.get("reason", "") for item in items], dtype=str),
    }


class _Embedder:
    """One actor of the pool: holds the model, embeds preprocessed batches."""

    def __init__(self, model_factory: Callable[[], Model], threads: int | None):
        if threads:  # Ray caps a CPU actor at its (fractional) CPU request; the forward pass wants the cores
            torch.set_num_threads(threads)
        self.model = model_factory()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        embeddings = self.model.embed_images(torch.from_numpy(batch["pixel_values"]))
        passed_on = {name: batch[name] for name in ("index", "label", "bad", "reason")}
        return {**passed_on, "embedding": embeddings}


class RayEngine:
    """Embeds one model's splits on the Ray session opened by `ray_session`.

    `workers` actors hold the model (default: one per GPU of the cluster, or one on a cluster without GPUs), each
    with `gpus_per_worker` GPUs (default 1 where the cluster has GPUs, else 0, i.e. on CPU). `on_load` hears when
    the model is first loaded."""

    def __init__(
        self,
        model_title: str,
        workers: int | None = None,
        gpus_per_worker: float | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        on_load: Callable[[], None] | None = None,
    ):
        self.ray = _import_ray()
        resources = self.ray.cluster_resources()
        cpus, gpus = resources.get("CPU", 1.0), resources.get("GPU", 0.0)
        self.gpus_per_worker = (1.0 if gpus else 0.0) if gpus_per_worker is None else gpus_per_worker
        self.workers = workers or (max(1, int(gpus // self.gpus_per_worker)) if self.gpus_per_worker else 1)
        if self.gpus_per_worker * self.workers > gpus:
            raise TTIEvalError(
                f"{self.workers} workers with {self.gpus_per_worker:g} GPUs each need more than the cluster's "
                f"{gpus:g} GPUs; lower --workers or --gpus-per-worker."
            )
        # Actors and read tasks each get at most half the CPUs: a pool that claims them all starves the reads and
        # the build hangs without a word.
        self.cpus_per_worker = min(1.0, cpus / (2 * self.workers))
        on_cpu = not self.gpus_per_worker
        # Ray Data fuses a read into the actors whose resource requests equal its own, and the actor then decodes
        # between forward passes, one image at a time; on CPU the reads ask for less than an actor so that they
        # stay tasks of their own (an actor with a GPU already asks for something else).
        self.cpus_per_read = self.cpus_per_worker / 2 if on_cpu else min(1.0, cpus / 2)
        self.threads = max(1, int(cpus // self.workers)) if on_cpu else None
        self.model_factory = ModelProvider.registry.factory(model_title, device="cpu" if on_cpu else None)
        self.batch_size = batch_size
        self._preprocessor: ImagePreprocessor | None = None
        self._on_load = on_load

    def _remote(self, function: Callable, **options: Any):
        return self.ray.remote(function).options(max_retries=3, **options)

    def _on_a_worker(self, prompts: list[list[str]]) -> np.ndarray | None:
        task = self._remote(_prepare, num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker)
        if self._preprocessor is None and self._on_load is not None:
            self._on_load()
        try:
            classes, self._preprocessor = self.ray.get(task.remote(self.model_factory, prompts))
        except self.ray.exceptions.RayTaskError as e:
            raise TTIEvalError(
                f"A Ray worker cannot load the model ({_cause(e)}); check it loads on every node."
            ) from None
        return classes

    def embed_classes(self, dataset: Dataset) -> np.ndarray | None:
        return self._on_a_worker(dataset.prompts if dataset.class_names else [])

    def _check_readable(self, dataset: Dataset) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = [node for node in self.ray.nodes() if node["Alive"] and node["Resources"].get("CPU")]
        index = _readable_index(dataset)
        refs = [
            self._remote(
                _probe, num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            ).remote(dataset, index)
            for node in nodes
        ]
        for node, ref in zip(nodes, refs, strict=True):
            try:
                problem = self.ray.get(ref)
            except self.ray.exceptions.RayTaskError as e:
                problem = _cause(e)
            if problem:
                raise TTIEvalError(
                    f"Ray node {node['NodeManagerAddress']} cannot read dataset '{dataset.title}' ({problem}); put "
                    "the images where every node can read them (a shared file system, an object store or the hub "
                    "cache)."
                )

    def embed_shards(
        self, dataset: Dataset, store: ShardStore, on_images: ProgressCallback, on_skip: SkipCallback | None = None
    ) -> None:
        todo = store.missing()
        if not todo:
            return
        self._check_readable(dataset)
        if self._preprocessor is None:
            self._on_a_worker([])
        # One block per batch: with one per shard, a shard's images reached the model and the driver all at once
        # (all 96 of a one-shard build in one piece), so decoding and the forward pass did not overlap.
        ranges = [
            {"start": start, "stop": min(start + self.batch_size, rows.stop)}
            for rows in map(store.rows, todo)
            for start in range(rows.start, rows.stop, self.batch_size)
        ]
        data = (
            self.ray.data.from_items(ranges, override_num_blocks=len(ranges))
            .flat_map(_indices)
            .map_batches(
                _read_and_preprocess,
                fn_kwargs={"dataset": dataset, "preprocess": self._preprocessor},
                batch_size=self.batch_size,
                num_cpus=self.cpus_per_read,
            )
            .map_batches(
                _Embedder,
                fn_constructor_kwargs={"model_factory": self.model_factory, "threads": self.threads},
                batch_size=self.batch_size,
                compute=self.ray.data.ActorPoolStrategy(size=self.workers),
                num_cpus=self.cpus_per_worker,
                num_gpus=self.gpus_per_worker,
                # No restart options: Ray Data's actor pools restart a killed actor and retry its batches without
                # limit by default, and passing Ray's remote options here is deprecated (removed in Ray 2.64).
            )
        )
        gathered = _Gathered(store, dataset, on_skip)
        for batch in data.iter_batches(batch_size=None, batch_format="numpy"):
            on_images(gathered.add(batch))


class _Gathered:
    """Results placed by index into their shards; each shard is written as soon as all its rows have arrived.

    An unreadable image raises `BadImageError` here, on the driver, unless `on_skip`: then it is reported through it
    and recorded in its shard."""

    def __init__(self, store: ShardStore, dataset: Dataset, on_skip: SkipCallback | None):
        self.store, self.dataset, self.on_skip = store, dataset, on_skip
        self.open: dict[int, dict[str, np.ndarray]] = {}

    def add(self, batch: dict[str, np.ndarray]) -> int:
        """Place one batch; returns how many images it added (a retried batch may repeat some)."""
        added = 0
        indices, embeddings = batch["index"], batch["embedding"]
        shards = indices // self.store.shard_size
        for shard in np.unique(shards):
            rows = self.store.rows(int(shard))
            mine = shards == shard
            if shard not in self.open:
                size = len(rows)
                self.open[shard] = {
                    "images": np.empty((size, embeddings.shape[1]), np.float32),
                    "label": np.empty(size, np.int64),
                    "bad": np.full(size, "", dtype=object),
                    "reason": np.full(size, "", dtype=object),
                    "filled": np.zeros(size, bool),
                }
            arrays = self.open[shard]
            offsets = indices[mine] - rows.start
            new = ~arrays["filled"][offsets]
            bad = [
                {"bad": b, "reason": r}
                for b, r in zip(batch["bad"][mine][new], batch["reason"][mine][new], strict=True)
                if b
            ]
            pass_on_bad(bad, self.dataset, self.on_skip)
            added += int(new.sum())
            arrays["images"][offsets] = embeddings[mine]
            for name in ("label", "bad", "reason"):
                arrays[name][offsets] = batch[name][mine]
            arrays["filled"][offsets] = True
            if arrays["filled"].all():
                good = arrays["bad"] == ""
                skipped = list(zip(arrays["bad"][~good], arrays["reason"][~good], strict=True))
                write_shard(
                    self.store, self.dataset, int(shard), [arrays["images"][good]], [arrays["label"][good]], skipped
                )
                del self.open[shard]
        return added


def _cause(error: Exception) -> str:
    cause = getattr(error, "cause", None) or error
    return f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}"
