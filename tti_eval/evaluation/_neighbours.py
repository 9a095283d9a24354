"""Exact nearest neighbours between a train and a validation set, in both directions, from one pass over the pairs.

wKNN asks for each validation image's nearest train images and I2IR for each train image's nearest validation
images: the same n_train × n_val distances read along columns and along rows. `search_neighbours` computes them
once, tile by tile, and feeds every tile to top-k heaps in both directions, so that memory stays at one tile plus
the results, never the full distance matrix.

"Nearest" is defined in float64: the squared L2 distance between the rows scaled to unit norm in float64, ties to
the lower index. Float32 BLAS (faiss's `pairwise_L2sqr`, the computation behind `IndexFlatL2`) only proposes
candidates, in three steps that keep its speed without trusting its rounding:

1. Both sets are centred on their common mean before the float32 search. Squared distances do not change under a
   translation, but the rounding of ‖x‖² + ‖y‖² − 2x·y scales with ‖x‖² + ‖y‖², so centring shrinks it from ~1e-7
   to ~1e-7 × (spread of the set)²: on embeddings that all lie near one direction (an untrained model) the spread
   is ~1e-4 and the distances ~1e-8, which uncentred float32 cannot rank at all.
2. Each query keeps a margin of extra float32 candidates. `_error_factor` bounds the float32 error of every
   distance, so two candidates whose float32 distances are further apart than twice the bound are ordered for
   certain; candidates closer than that (and the k-th's whole chain of such neighbours) get their exact float64
   distance by subtracting the unit vectors. The margin is proven sufficient when the last kept candidate is more
   than twice the bound beyond the k-th.
3. A query where the margin cannot be proven (many exact or near-exact ties, duplicates) is ranked against the
   whole other set with float64 distances, under the same bound in float64.

The result is therefore the float64 ranking itself, independent of the number of threads, the tile size and the
order in which BLAS adds things up.

How many neighbours is asked per query, not per set: I2IR reads only a train image's first Q = min(k, size of its
class in validation), which at 20 validation images per class is a fifth of k = 100, and the exact ranking (step
2) is what costs beyond the float32 distances. Rows are as wide as the largest count, with -1 after a query's own.

The distances run on faiss's OpenMP threads; the numpy work between them (heaps of the columns, re-ranking, norms)
runs on as many Python threads, each on its own rows or columns, since numpy releases the GIL in its loops. No
numpy BLAS call is on the main path: its threads and faiss's would spin against each other.

Where faiss was built with GPU support and sees a GPU (`faiss.get_num_gpus() > 0`), the float32 tiles are computed
there (`pairwise_distance_gpu`, the same ‖x‖² + ‖y‖² − 2x·y in float32 arithmetic, and by the same bound) and
everything after them stays as above, so the neighbours are the same exact ones.
"""

import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import faiss
import numpy as np

from tti_eval.common.vectors import row_chunks

from .utils import normalize

# Rows of each side per tile: a 2048 × 2048 float32 tile (16 MiB) is large enough for BLAS to run near its peak
# and for the per-call overheads (thread wake-ups) to vanish, and small next to any cache worth tiling.
TILE = 2048
# Pairs per chunk when measuring exact distances: two [pairs, dim] float64 buffers (1.5 MiB each at dim 768) that
# stay in cache; chunks of 4096 pairs, which do not, took twice as long.
_PAIRS = 256
# Entries of the [queries, n_other] float64 rows that one fallback step holds (32 MiB).
_FALLBACK_ENTRIES = 1 << 22


# How many neighbours to find: one count for every query, or one per query.
Counts = int | np.ndarray


@dataclass(frozen=True)
class Neighbours:
    """Indices of nearest neighbours, nearest first, for one train and one validation set. A query asked for fewer
    neighbours than the widest row has -1 after its own."""

    val_to_train: np.ndarray  # [n_val, k] int64 indices into the train images
    train_to_val: np.ndarray  # [n_train, k'] int32 indices into the validation images (int32: n_train × 100 is large)

    def check_matches(self, n_train: int, n_val: int, k_val_to_train: Counts = 0, k_train_to_val: Counts = 0) -> None:
        """Shared neighbours must come from the same pair of sets, with at least as many neighbours as needed."""
        for name, found, rows, k in (
            ("validation → train", self.val_to_train, n_val, k_val_to_train),
            ("train → validation", self.train_to_val, n_train, k_train_to_val),
        ):
            need = np.broadcast_to(np.asarray(k), (rows,))
            widest = int(need.max(initial=0))
            if widest and (len(found) != rows or found.shape[1] < widest or (_found(found) < need).any()):
                raise ValueError(f"shared neighbours cover {found.shape} {name}, need ({rows}, ≥{widest})")


def _found(neighbours: np.ndarray) -> np.ndarray:
    """How many neighbours each row holds: rows are filled from the left, -1 after the last."""
    return (neighbours >= 0).sum(axis=1)


def _per_query(k: Counts, queries: int, others: int) -> np.ndarray:
    """Each query's number of neighbours to find, capped at the size of the searched set."""
    return np.minimum(np.broadcast_to(np.asarray(k, dtype=np.int64), (queries,)), others)


def _error_factor(dim: int, unit_roundoff: float) -> float:
    """c such that a squared distance computed as ‖x‖² + ‖y‖² − 2x·y from centred vectors rounded to a precision
    with this unit roundoff u is within c · (‖x‖ + ‖y‖)² of the exact one.

    Each of the three length-`dim` sums is within γ_dim = dim·u / (1 − dim·u) of its exact value times the sum of
    the magnitudes of its terms, whatever order BLAS adds them in (Higham, Accuracy and Stability, §3.1), the two
    final additions add 2u, and rounding the centred vectors to this precision adds 2u more (plus the float64
    centring, far below): γ_(dim + 4). γ_(dim + 8) with 1 % more covers the norms of the rounded vectors too.
    """
    terms = (dim + 8) * unit_roundoff
    return 1.01 * terms / (1 - terms)


def _candidates_kept(k: int, n_other: int) -> int:
    """Float32 candidates kept per query: k plus a margin that almost always proves sufficient on spread data."""
    return min(n_other, k + 8 + k // 4)


def _in_parts(n: int, work: Callable[[slice], None], smallest: int = 256) -> None:
    """work(part) for contiguous parts of range(n), on as many threads as faiss uses: numpy and faiss release the
    GIL in their loops, and the parts are independent, so that how many there are cannot change a result."""
    threads = faiss.omp_get_max_threads()
    parts = [
        slice(int(p[0]), int(p[-1]) + 1)
        for p in np.array_split(np.arange(n), max(1, min(threads, n // smallest)))
        if len(p)
    ]
    if len(parts) == 1:
        work(parts[0])
        return
    for done in [_pool(threads).submit(work, part) for part in parts]:
        done.result()


@functools.cache
def _pool(threads: int) -> ThreadPoolExecutor:
    """One pool per thread count, kept for the process: a search calls `_in_parts` for every tile, and starting
    fresh threads each time cost seconds at 100k × 20k (a new thread waits to be scheduled while faiss's OpenMP
    threads spin)."""
    return ThreadPoolExecutor(threads, thread_name_prefix="tti-eval-neighbours")


def _chunks_of(part: slice) -> list[slice]:
    """`part` in chunks of `row_chunks`' size, so that float64 copies of its rows stay small."""
    return [slice(part.start + rows.start, part.start + rows.stop) for rows in row_chunks(part.stop - part.start)]


def _unit64(images: np.ndarray) -> np.ndarray:
    return normalize(np.asarray(images, dtype=np.float64))


def _common_centre(*sets: np.ndarray) -> np.ndarray:
    """Mean of the float64 unit rows of all sets: sums per chunk on several threads, added in chunk order, so that
    the centre is the same for every thread count."""
    chunks = [(images, rows) for images in sets for rows in row_chunks(len(images))]
    sums = np.empty((len(chunks), sets[0].shape[1]), dtype=np.float64)

    def work(part: slice) -> None:
        for index in range(part.start, part.stop):
            images, rows = chunks[index]
            sums[index] = _unit64(images[rows]).sum(axis=0)

    _in_parts(len(chunks), work, smallest=1)
    return sums.sum(axis=0) / sum(len(images) for images in sets)


def _centred(images: np.ndarray, centre: np.ndarray, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """The unit rows minus `centre`, in `dtype`, and their float64 norms."""
    centred = np.empty(images.shape, dtype=dtype)
    norms = np.empty(len(images), dtype=np.float64)

    def work(part: slice) -> None:
        for rows in _chunks_of(part):
            centred[rows] = _unit64(images[rows]) - centre
            norms[rows] = np.sqrt(np.einsum("ij,ij->i", centred[rows], centred[rows], dtype=np.float64))

    _in_parts(len(images), work)
    return centred, norms


def _lengths(images: np.ndarray) -> np.ndarray:
    """Float64 L2 norms of the rows, exactly those `_unit64` divides by, so that dividing by them gives its rows."""
    lengths = np.empty(len(images), dtype=np.float64)

    def work(part: slice) -> None:
        for rows in _chunks_of(part):
            lengths[rows] = np.linalg.norm(np.asarray(images[rows], dtype=np.float64), ord=2, axis=1)

    _in_parts(len(images), work)
    return lengths


def _pair_distances(
    query_unit: np.ndarray,
    others: np.ndarray,
    other_lengths: np.ndarray,
    query_rows: np.ndarray,
    other_ids: np.ndarray,
) -> np.ndarray:
    """Exact float64 squared distances between query_unit[query_rows[i]] and the unit row of others[other_ids[i]]
    (its float64 row divided by other_lengths[other_ids[i]], exactly as `_unit64` scales it).

    This is most of the re-ranking's time, and it is bound by memory traffic: the pairs go in chunks small enough
    for the gathered rows to stay in cache, through buffers reused in place. (Callers run it on several threads at
    once, one part of the queries each.)
    """
    distances = np.empty(len(query_rows), dtype=np.float64)
    difference = np.empty((min(_PAIRS, len(query_rows)), query_unit.shape[1]), dtype=np.float64)
    query = np.empty_like(difference)
    for pairs in row_chunks(len(query_rows), _PAIRS):
        ids, count = other_ids[pairs], pairs.stop - pairs.start
        np.divide(others[ids], other_lengths[ids, None], out=difference[:count])
        difference[:count] -= np.take(query_unit, query_rows[pairs], axis=0, out=query[:count])
        distances[pairs] = np.einsum("ij,ij->i", difference[:count], difference[:count])
    return distances


def _rank(
    values: np.ndarray,
    ids: np.ndarray,
    bound: np.ndarray,
    k: np.ndarray,
    exact_distances: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> np.ndarray:
    """The first k[i] (≥ 1) of row i's candidates in exact order, then -1 up to the widest k, given candidates
    sorted by approximate distance (`values`, ties by id) that are each within `bound` (per row) of the exact
    distance and that contain every candidate the exact top k[i] can hold.

    Candidates whose intervals value ± bound overlap chain into one cluster; clusters are in exact order among
    themselves, so only the members of shared clusters up to the k-th's need `exact_distances(rows, ids)`.
    """
    approximate = values.astype(np.float64)
    links = np.diff(approximate, axis=1) <= 2 * bound[:, None]  # candidate j and j + 1 may be in either order
    cluster = np.zeros(approximate.shape, dtype=np.int64)
    cluster[:, 1:] = np.cumsum(~links, axis=1)
    within = cluster <= np.take_along_axis(cluster, k[:, None] - 1, axis=1)
    shared = np.zeros(approximate.shape, dtype=bool)
    shared[:, 1:] |= links
    shared[:, :-1] |= links
    rows, columns = np.nonzero(within & shared)
    exact = np.zeros(approximate.shape, dtype=np.float64)  # a cluster of one needs no exact distance
    exact[rows, columns] = exact_distances(rows, ids[rows, columns])
    widest = int(k.max(initial=0))
    order = np.lexsort((ids, exact, np.where(within, cluster, ids.shape[1])), axis=-1)[:, :widest]
    return np.where(np.arange(widest) < k[:, None], np.take_along_axis(ids, order, axis=1), -1)


def _exact_top(
    values: np.ndarray,
    ids: np.ndarray,
    norms: np.ndarray,
    other_radius: float,
    k: np.ndarray,
    width: int,
    query_unit: np.ndarray,
    others: np.ndarray,
    other_lengths: np.ndarray,
    centre: np.ndarray,
) -> np.ndarray:
    """Each query's exact k[i] nearest others, then -1 up to `width`, from its float32 candidates (sorted, from the
    centred search, whose centred queries have these `norms`) where the margin proves sufficient, and from a float64
    pass over all others where it does not."""
    bound = _error_factor(query_unit.shape[1], 2.0**-24) * (norms + other_radius) ** 2
    kth = np.take_along_axis(values, np.maximum(k, 1)[:, None] - 1, axis=1)[:, 0].astype(np.float64)
    proven = (values.shape[1] >= len(others)) | (values[:, -1].astype(np.float64) - kth > 2 * bound)
    result = np.full((len(query_unit), width), -1, dtype=np.int64)
    sure = np.flatnonzero(proven & (k > 0))
    ranked = _rank(
        values[sure],
        ids[sure],
        bound[sure],
        k[sure],
        lambda r, o: _pair_distances(query_unit, others, other_lengths, sure[r], o),
    )
    result[sure, : ranked.shape[1]] = ranked
    unsure = np.flatnonzero(~proven & (k > 0))
    for chunk in row_chunks(len(unsure), max(1, _FALLBACK_ENTRIES // len(others))):
        rows = unsure[chunk]
        query_centred = query_unit[rows] - centre
        query_norms = np.sqrt(np.einsum("ij,ij->i", query_centred, query_centred))
        full = np.empty((len(rows), len(others)), dtype=np.float64)
        radius = 0.0
        for block in row_chunks(len(others)):
            other_centred, other_norms = _centred(others[block], centre, np.float64)
            radius = max(radius, float(other_norms.max()))
            full[:, block] = (query_norms**2)[:, None] + (other_norms**2)[None, :] - 2 * query_centred @ other_centred.T
        order = np.argsort(full, axis=1, kind="stable")
        bound64 = _error_factor(query_unit.shape[1], 2.0**-53) * (query_norms + radius) ** 2
        ranked = _rank(
            np.take_along_axis(full, order, axis=1),
            order,
            bound64,
            k[rows],
            lambda r, o, rows=rows: _pair_distances(query_unit, others, other_lengths, rows[r], o),
        )
        result[rows, : ranked.shape[1]] = ranked
    return result


_TileDistances = Callable[[np.ndarray, np.ndarray, np.ndarray], None]


def _tile_distances() -> _TileDistances:
    """A function that fills out[i, j] with the float32 squared L2 distance between left[i] and right[j] (C-contiguous
    float32 arrays): on the GPU when faiss has one, with faiss's BLAS otherwise."""
    if faiss.get_num_gpus() > 0:
        # TF32 tensor cores would round the products to 10 bits, far beyond the float32 bound the proof uses;
        # faiss keeps float32 arithmetic, and this keeps a global CUDA override from turning TF32 on.
        os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")
        resources = faiss.StandardGpuResources()
        return lambda left, right, out: faiss.pairwise_distance_gpu(resources, left, right, D=out)
    return lambda left, right, out: faiss.pairwise_L2sqr(
        left.shape[1], len(left), faiss.swig_ptr(left), len(right), faiss.swig_ptr(right), faiss.swig_ptr(out)
    )


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
                self._add_below_kth_in_parts(tile[start:stop], first_heap, first_id + start)
            start = stop

    def _add_below_kth_in_parts(self, tile: np.ndarray, first_heap: int, first_id: int) -> None:
        """`_add_below_kth` for parts of the columns on several threads: each part has heaps of its own."""
        _in_parts(
            tile.shape[1],
            lambda columns: self._add_below_kth(tile[:, columns], first_heap + columns.start, first_id),
        )

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

    def sorted(self, heaps: slice) -> tuple[np.ndarray, np.ndarray]:
        """Distances and ids of these heaps, nearest first; equal distances by increasing id."""
        values, ids = self.values[heaps], self.ids[heaps]
        order = np.lexsort((ids, values), axis=-1)
        return np.take_along_axis(values, order, axis=-1), np.take_along_axis(ids, order, axis=-1)


def _finish(
    heaps: _TopK,
    queries: np.ndarray,
    norms: np.ndarray,
    other_radius: float,
    k: np.ndarray,
    others: np.ndarray,
    other_lengths: np.ndarray,
    centre: np.ndarray,
    out: np.ndarray,
) -> None:
    """Fill `out` with each query's exact neighbours from its heap of float32 candidates (`_exact_top`), in parts on
    several threads and in chunks within each, because the unit queries are float64."""

    def work(part: slice) -> None:
        for rows in _chunks_of(part):
            values, ids = heaps.sorted(rows)
            out[rows] = _exact_top(
                values,
                ids,
                norms[rows],
                other_radius,
                k[rows],
                out.shape[1],
                _unit64(queries[rows]),
                others,
                other_lengths,
                centre,
            )

    _in_parts(len(out), work)


def search_neighbours(
    train_images: np.ndarray,
    val_images: np.ndarray,
    k_val_to_train: Counts = 0,
    k_train_to_val: Counts = 0,
    tile: int = TILE,
) -> Neighbours:
    """Each validation image's `k_val_to_train` nearest train images and each train image's `k_train_to_val` nearest
    validation images, by exact float64 L2 distance between the L2-normalised images, ties to the lower index. A
    count is one for all queries or one per query (capped at the size of the searched set; 0 skips the query, and
    a direction when all are 0); rows are as wide as the largest count. The inputs are not modified."""
    n_train, n_val = len(train_images), len(val_images)
    k_vt, k_tv = _per_query(k_val_to_train, n_val, n_train), _per_query(k_train_to_val, n_train, n_val)
    width_vt, width_tv = int(k_vt.max(initial=0)), int(k_tv.max(initial=0))
    val_to_train = np.empty((n_val, width_vt), dtype=np.int64)
    train_to_val = np.empty((n_train, width_tv), dtype=np.int32)
    if not (width_vt or width_tv):
        return Neighbours(val_to_train, train_to_val)

    centre = _common_centre(train_images, val_images)
    # Exact distances read the other side's rows as stored and divide them by their float64 lengths.
    train_lengths, val_lengths = _lengths(train_images), _lengths(val_images)
    val_centred, val_norms = _centred(val_images, centre, np.float32)  # visited once per train block
    val_heaps = _TopK(n_val, _candidates_kept(width_vt, n_train)) if width_vt else None
    train_radius = 0.0
    tile_distances = _tile_distances()
    buffer = np.empty(tile * tile, dtype=np.float32)  # flat, so that a partial tile is still one contiguous block
    for t0 in range(0, n_train, tile):
        train_block = train_images[t0 : t0 + tile]
        train_centred, train_norms = _centred(train_block, centre, np.float32)
        train_radius = max(train_radius, float(train_norms.max()))
        rows = len(train_centred)
        # final once this block has met every validation image
        strip_heaps = _TopK(rows, _candidates_kept(width_tv, n_val)) if width_tv else None
        for v0 in range(0, n_val, tile):
            val_block = val_centred[v0 : v0 + tile]
            cols = len(val_block)
            distances = buffer[: rows * cols].reshape(rows, cols)  # [train, validation] squared L2
            tile_distances(train_centred, val_block, distances)
            if strip_heaps is not None:
                strip_heaps.add_rows(distances, first_heap=0, first_id=v0)
            if val_heaps is not None:
                val_heaps.add_columns(distances, first_heap=v0, first_id=t0, offered=t0)
        if strip_heaps is not None:
            block = slice(t0, t0 + rows)
            radius = float(val_norms.max())
            _finish(
                strip_heaps,
                train_block,
                train_norms,
                radius,
                k_tv[block],
                val_images,
                val_lengths,
                centre,
                train_to_val[block],
            )
    if val_heaps is not None:
        _finish(val_heaps, val_images, val_norms, train_radius, k_vt, train_images, train_lengths, centre, val_to_train)
    return Neighbours(val_to_train, train_to_val)
