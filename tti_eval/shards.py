"""Resumable splits: a split is embedded in fixed-size shards of consecutive images, each written atomically to a
work folder beside the split's cache file, so that an interrupted build loses at most one shard of work.

The folder (`.<model>_<split>.shards/` next to `<model>_<split>.npz`) holds a `key.json` naming what the shards were
computed from; shards are only reused by a build whose key is identical, and a build with another key starts the
folder afresh. Once every shard is there, the final file is assembled by streaming the shards into it in order
(peak memory: one shard), and the folder is removed.
"""

import hashlib
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tti_eval.common.atomic import atomic_write, remove_stale_temp_files, write_error

DEFAULT_SHARD_SIZE = 4096
_KEY_FILE = "key.json"


def shard_key(**identity: Any) -> str:
    """A digest of everything that decides a shard's content (definitions, split, number of images, shard size)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


class ShardStore:
    """The finished shards of one split: shard `i` holds images `[i * shard_size, (i + 1) * shard_size)`."""

    def __init__(
        self, final_path: Path, key: str, num_images: int, shard_size: int = DEFAULT_SHARD_SIZE, discard: bool = False
    ):
        """`discard`: start afresh even from shards of the same key (a build asked to overwrite)."""
        if shard_size < 1:
            raise ValueError("shard_size must be positive")
        self.folder = final_path.with_name(f".{final_path.stem}.shards")
        self.final_path = final_path  # what a failed write is reported as: the shards are its work files
        self.key = key
        self.num_images = num_images
        self.shard_size = shard_size
        self._open(discard)

    def _open(self, discard: bool) -> None:
        key_file = self.folder / _KEY_FILE
        try:
            found = json.loads(key_file.read_text(encoding="utf-8"))["key"]
        except (OSError, ValueError, KeyError, TypeError):
            found = None
        if found != self.key or discard:  # shards of another definition, or no usable folder: start afresh
            shutil.rmtree(self.folder, ignore_errors=True)
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise write_error(e, self.final_path) from None
            key = json.dumps({"key": self.key}).encode()
            atomic_write(key_file, lambda handle: handle.write(key), reported_as=self.final_path)
        remove_stale_temp_files(self.folder)

    @property
    def num_shards(self) -> int:
        return -(-self.num_images // self.shard_size)

    def rows(self, shard: int) -> range:
        return range(shard * self.shard_size, min((shard + 1) * self.shard_size, self.num_images))

    def _path(self, shard: int) -> Path:
        return self.folder / f"shard-{shard:07d}.npz"

    def missing(self) -> list[int]:
        """Shards still to embed, in order."""
        return [shard for shard in range(self.num_shards) if not self._path(shard).is_file()]

    def resumed_images(self) -> int:
        """Images whose embeddings a previous run already left in finished shards."""
        done = set(range(self.num_shards)) - set(self.missing())
        return sum(len(self.rows(shard)) for shard in done)

    def write(
        self, shard: int, images: np.ndarray, labels: np.ndarray, skipped: Sequence[tuple[str, str]] = ()
    ) -> None:
        """A finished shard: the embeddings and labels of its readable images, and the (image, reason) of the rest."""
        if images.shape[0] + len(skipped) != len(self.rows(shard)) or labels.shape[0] != images.shape[0]:
            raise ValueError(f"shard {shard} needs {len(self.rows(shard))} rows, got {images.shape[0]}")
        arrays = {"images": images, "labels": labels, "skipped": np.array(json.dumps(list(skipped)))}
        atomic_write(self._path(shard), lambda handle: np.savez(handle, **arrays), reported_as=self.final_path)

    def _read(self, shard: int, name: str) -> np.ndarray:
        with np.load(self._path(shard), allow_pickle=False) as archive:
            return archive[name]

    def image_chunks(self) -> Iterator[np.ndarray]:
        """Each shard's image embeddings in order, one shard in memory at a time."""
        for shard in range(self.num_shards):
            yield self._read(shard, "images")

    def labels(self) -> np.ndarray:
        return np.concatenate([self._read(shard, "labels") for shard in range(self.num_shards)])

    def skipped(self) -> list[tuple[str, str]]:
        return [tuple(item) for s in range(self.num_shards) for item in json.loads(str(self._read(s, "skipped")))]

    def dim(self) -> int:
        """The embeddings' dimension, from the first shard with a readable image (0 if none has one)."""
        for shard in range(self.num_shards):
            images = self._read(shard, "images")
            if images.shape[0]:
                return int(images.shape[1])
        return 0

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
