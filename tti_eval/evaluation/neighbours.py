"""Exact nearest neighbours between a train and a validation set, in both directions, from one pass over the pairs.

wKNN asks for each validation image's nearest train images and I2IR for each train image's nearest validation
images: the same n_train × n_val distances read along columns and along rows. `search_neighbours` computes them
once, tile by tile, and feeds every tile to top-k heaps in both directions, so that memory stays at one tile plus
the results, never the full distance matrix.

Distances and heaps are faiss's own (`pairwise_L2sqr`, the BLAS computation behind its exact `IndexFlatL2` search,
and the heaps that search keeps), so neighbours agree with faiss up to the order of equal distances, which here
always ranks the lower index first. Keeping the heavy work inside faiss also keeps to one thread pool: interleaving
numpy's BLAS threads with faiss's OpenMP threads makes them spin against each other.
"""

from dataclasses import dataclass

import faiss
import numpy as np

from .utils import normalize

# Rows of each side per tile: a 2048 × 2048 float32 tile (16 MiB) is large enough for BLAS to run near its peak
# and for the per-call overheads (thread wake-ups) to vanish, and small next to any cache worth tiling.
TILE = 2048


@dataclass(frozen=True)
class Neighbours:
    """Indices of nearest neighbours, nearest first, for one train and one validation set."""

    val_to_train: np.ndarray  # [n_val, k] int64 indices into the train images
    train_to_val: np.ndarray  # [n_train, k'] int32 indices into the validation images (int32: n_train × 100 is large)

    def check_matches(self, n_train: int, n_val: int, k_val_to_train: int = 0, k_train_to_val: int = 0) -> None:
        """Shared neighbours must come from the same pair of sets, with at least as many neighbours as needed."""
        for name, found, rows, k in (
            ("validation → train", self.val_to_train.shape, n_val, k_val_to_train),
            ("train → validation", self.train_to_val.shape, n_train, k_train_to_val),
        ):
            if k and (found[0] != rows or found[1] < k):
                raise ValueError(f"shared neighbours cover {found} {name}, need ({rows}, ≥{k})")


class _TopK:
    """The k smallest distances offered so far to each of `heaps` heaps, in faiss's C++ heaps.

    A distance replaces the current k-th only when strictly smaller, so among equal distances the first offered
    stays; every caller offers ids in increasing order, which makes the lower index win ties.
    """

    def __init__(self, heaps: int, k: int) -> None:
        self.k = k
        self.values = np.empty((heaps, k), dtype=np.float32)
        self.ids = np.empty((heaps, k), dtype=np.int64)
        self._heaps = faiss.float_maxheap_array_t()
        self._heaps.nh = heaps
        self._heaps.k = k
        self._heaps.val = faiss.swig_ptr(self.values)
        self._heaps.ids = faiss.swig_ptr(self.ids)
        self._heaps.heapify()

    def add_rows(self, tile: np.ndarray, first_heap: int, first_id: int) -> None:
        """Row i of a C-contiguous tile goes to heap first_heap + i, column j with id first_id + j."""
        self._heaps.addn(tile.shape[1], faiss.swig_ptr(tile), first_id, first_heap, tile.shape[0])

    def add_columns(self, tile: np.ndarray, first_heap: int, first_id: int, offered: int) -> None:
        """Column j of the tile goes to heap first_heap + j, row i with id first_id + i; `offered` values already
        went to each of these heaps.

        Transposing every tile would cost as much as the heaps themselves. Instead only the entries below the
        current k-th distance of their column are picked out and handed over padded to equal length per heap.
        Rows go in chunks no larger than what the heaps have already seen, so that about k entries per column
        beat the threshold in each chunk, however fresh the heaps.
        """
        start = 0
        while start < len(tile):
            seen = offered + start
            if seen < self.k:  # not full yet, so every value would be a candidate: hand these rows over densely
                stop = min(self.k - seen, len(tile))
                self.add_rows(np.ascontiguousarray(tile[start:stop].T), first_heap, first_id + start)
            else:
                stop = min(start + seen, len(tile))
                self._add_below_kth(tile[start:stop], first_heap, first_id + start)
            start = stop

    def _add_below_kth(self, tile: np.ndarray, first_heap: int, first_id: int) -> None:
        kth = self.values[first_heap : first_heap + tile.shape[1], 0]  # a max-heap keeps its k-th smallest on top
        # 1-D flatnonzero is an order of magnitude faster than 2-D nonzero
        rows, columns = np.divmod(np.flatnonzero(tile < kth), tile.shape[1])
        if not len(rows):
            return
        order = np.argsort(columns, kind="stable")  # group by heap, ids still increasing within each group
        rows, columns = rows[order], columns[order]
        counts = np.bincount(columns, minlength=tile.shape[1])
        slots = np.arange(len(columns)) - np.repeat(np.cumsum(counts) - counts, counts)
        width = int(counts.max())
        values = np.full((tile.shape[1], width), np.inf, dtype=np.float32)  # +inf never enters a heap
        ids = np.full((tile.shape[1], width), -1, dtype=np.int64)
        values[columns, slots] = tile[rows, columns]
        ids[columns, slots] = first_id + rows
        self._heaps.addn_with_ids(width, faiss.swig_ptr(values), faiss.swig_ptr(ids), width, first_heap, len(values))

    def sorted_ids(self) -> np.ndarray:
        """Ids per heap, nearest first; equal distances by increasing id, so the order never depends on the heap."""
        order = np.lexsort((self.ids, self.values), axis=-1)
        return np.take_along_axis(self.ids, order, axis=-1)


def search_neighbours(
    train_images: np.ndarray,
    val_images: np.ndarray,
    k_val_to_train: int = 0,
    k_train_to_val: int = 0,
    tile: int = TILE,
) -> Neighbours:
    """Each validation image's `k_val_to_train` nearest train images and each train image's `k_train_to_val` nearest
    validation images, by exact L2 distance between the L2-normalised images (k is capped at the size of the
    searched set; 0 skips a direction). The inputs are not modified."""
    n_train, n_val = len(train_images), len(val_images)
    k_vt, k_tv = min(k_val_to_train, n_train), min(k_train_to_val, n_val)
    val_to_train = np.empty((n_val, k_vt), dtype=np.int64)
    train_to_val = np.empty((n_train, k_tv), dtype=np.int32)
    if not (k_vt or k_tv):
        return Neighbours(val_to_train, train_to_val)

    dim = val_images.shape[1]
    val_unit = np.ascontiguousarray(normalize(val_images), dtype=np.float32)  # visited once per train block
    val_heaps = _TopK(n_val, k_vt) if k_vt else None
    buffer = np.empty(tile * tile, dtype=np.float32)  # flat, so that a partial tile is still one contiguous block
    for t0 in range(0, n_train, tile):
        train_unit = np.ascontiguousarray(normalize(train_images[t0 : t0 + tile]), dtype=np.float32)
        rows = len(train_unit)
        strip_heaps = _TopK(rows, k_tv) if k_tv else None  # final once this block has met every validation image
        for v0 in range(0, n_val, tile):
            val_block = val_unit[v0 : v0 + tile]
            cols = len(val_block)
            distances = buffer[: rows * cols].reshape(rows, cols)  # [train, validation] squared L2
            faiss.pairwise_L2sqr(
                dim, rows, faiss.swig_ptr(train_unit), cols, faiss.swig_ptr(val_block), faiss.swig_ptr(distances)
            )
            if strip_heaps is not None:
                strip_heaps.add_rows(distances, first_heap=0, first_id=v0)
            if val_heaps is not None:
                val_heaps.add_columns(distances, first_heap=v0, first_id=t0, offered=t0)
        if strip_heaps is not None:
            train_to_val[t0 : t0 + rows] = strip_heaps.sorted_ids()
    if val_heaps is not None:
        val_to_train[:] = val_heaps.sorted_ids()
    return Neighbours(val_to_train, train_to_val)
