"""Approximate neighbours for pairs past exact reach (SPEC §9), with their recall against exact search measured.

`auto` searches exactly while n_train × n_val × dim stays below `EXACT_LIMIT` and approximately beyond. The
approximate search builds, for each direction, a faiss inverted-file index over the searched set with faiss's own
index factory: `IVF<nlist>,Flat` while a float32 copy of that set takes at most half of the memory available now,
`IVF<nlist>,PQ<m>` beyond, with nlist ≈ √n. How many lists each query visits (nprobe) is the smallest power of two
that reaches `RECALL_TARGET` on one seeded sample of queries, and the recall@k reported is measured afresh on a
second sample, against the exact float64 neighbours of `_neighbours`. As in the exact search, both sets are
centred on their common mean first, so that a nearly collapsed set keeps what float32 can resolve.
"""

import math
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np

from tti_eval.common.errors import TTIEvalError
from tti_eval.common.vectors import row_chunks

from ._metrics import SEED

if TYPE_CHECKING:  # faiss (through the search modules) loads only when a search runs: `tti-eval --help` must not wait
    import faiss

    from ._neighbours import Neighbours

# n_train × n_val × dim from which `auto` searches approximately: the exact search does ~1e12 multiply-adds in about
# a minute on two cores (benchmarks/evaluate_scale.py, size C is 1.5e12).
EXACT_LIMIT = 10**12
RECALL_TARGET = 0.95
# Queries sampled per direction to choose nprobe, and as many others to measure the recall reported.
SAMPLED_QUERIES = 500
# Rows added to or searched in an index per call, so that their centred float32 copy stays small.
_ROWS = 65536


class Search(StrEnum):
    EXACT = "exact"
    APPROXIMATE = "approximate"
    AUTO = "auto"


def parse_search(search: "str | Search") -> Search:
    """The search mode named (case-insensitive)."""
    try:
        return Search(str(search).lower())
    except ValueError:
        raise TTIEvalError(f"There is no search '{search}'; choose exact, approximate or auto.") from None


def is_approximate(search: "str | Search", n_train: int, n_val: int, dim: int) -> bool:
    """Whether `search` means the approximate search for a pair of this size."""
    mode = parse_search(search)
    return mode is Search.APPROXIMATE or (mode is Search.AUTO and n_train * n_val * dim >= EXACT_LIMIT)


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """The mean share of each row's exact neighbours (`exact`, [n, k]) that `found` ([n, ≥k]) lists."""
    hits = (found[:, :, None] == exact[:, None, :]).any(axis=1).sum(axis=1)
    return float(hits.mean() / exact.shape[1])


def _available_bytes() -> int:
    with open("/proc/meminfo") as handle:
        fields = dict(line.split(":", 1) for line in handle)
    return int(fields["MemAvailable"].split()[0]) * 1024


def index_description(n: int, dim: int, available_bytes: int | None = None) -> str:
    """The faiss index factory string for a searched set of n rows of `dim` floats."""
    nlist = max(1, min(round(math.sqrt(n)), n // 39))  # faiss's k-means wants ≥ 39 training points per list
    if 4 * n * dim <= (available_bytes if available_bytes is not None else _available_bytes()) / 2:
        return f"IVF{nlist},Flat"
    # Codes over sub-vectors of ≥ 4 dimensions, the largest count that divides dim: 8-bit codes (≥ 8× smaller than
    # float32) once there are enough rows to train 256 centroids each, 4-bit ones below.
    sub_vectors = max(m for m in range(1, dim // 4 + 1) if dim % m == 0)
    return f"IVF{nlist},PQ{sub_vectors}x{8 if n >= 39 * 256 else 4}"


def _search(index: "faiss.Index", queries: np.ndarray, centre: np.ndarray, k: int) -> np.ndarray:

    from ._neighbours import _centred

    found = np.empty((len(queries), k), dtype=np.int64)
    for rows in row_chunks(len(queries), _ROWS):
        found[rows] = index.search(_centred(queries[rows], centre, np.float32)[0], k)[1]
    return found


def _one_direction(
    base: np.ndarray, queries: np.ndarray, k: int, centre: np.ndarray, seed: int
) -> tuple[np.ndarray, str]:
    """Each query's k approximate nearest rows of `base`, and the sentence that says how good they are."""
    import faiss

    from ._neighbours import _centred, search_neighbours

    description = index_description(len(base), base.shape[1])
    index = faiss.index_factory(base.shape[1], description)
    rng = np.random.default_rng(seed)
    nlist = faiss.extract_index_ivf(index).nlist
    training = np.sort(rng.choice(len(base), min(len(base), 64 * nlist), replace=False))
    index.train(_centred(base[training], centre, np.float32)[0])
    for rows in row_chunks(len(base), _ROWS):
        index.add(_centred(base[rows], centre, np.float32)[0])

    sample = rng.permutation(len(queries))[: 2 * SAMPLED_QUERIES]
    tune, measure = (sample[: len(sample) // 2], sample[len(sample) // 2 :]) if len(sample) > 1 else (sample, sample)
    tune, measure = np.sort(tune), np.sort(measure)
    exact_tune = search_neighbours(base, queries[tune], k_val_to_train=k).val_to_train
    nprobe = 1
    while True:
        faiss.extract_index_ivf(index).nprobe = nprobe
        if nprobe >= nlist or recall_at_k(_search(index, queries[tune], centre, k), exact_tune) >= RECALL_TARGET:
            break
        nprobe = min(2 * nprobe, nlist)
    found = _search(index, queries, centre, k)
    short = np.flatnonzero((found < 0).any(axis=1))  # the visited lists held fewer than k rows
    if len(short):
        faiss.extract_index_ivf(index).nprobe = nlist
        found[short] = _search(index, queries[short], centre, k)
    exact_measure = search_neighbours(base, queries[measure], k_val_to_train=k).val_to_train
    recall = recall_at_k(found[measure], exact_measure)
    note = (
        f"Approximate search ({description}, nprobe {nprobe}): recall@{k} {recall:.3f} against exact search on "
        f"{len(measure)} sampled queries."
    )
    return found, note


def approximate_neighbours(
    train_images: np.ndarray,
    val_images: np.ndarray,
    k_val_to_train: int = 0,
    k_train_to_val: int = 0,
    seed: int = SEED,
) -> tuple["Neighbours", dict[int, str]]:
    """Like `search_neighbours`, from approximate indices; also the recall sentence of each direction searched
    (key 0: validation → train, 1: train → validation, the order of `neighbour_request`)."""
    from ._neighbours import Neighbours, _common_centre

    k_vt, k_tv = min(k_val_to_train, len(train_images)), min(k_train_to_val, len(val_images))
    centre = _common_centre(train_images, val_images)
    notes: dict[int, str] = {}
    val_to_train = np.empty((len(val_images), k_vt), dtype=np.int64)
    train_to_val = np.empty((len(train_images), k_tv), dtype=np.int32)
    if k_vt:
        val_to_train[:], notes[0] = _one_direction(train_images, val_images, k_vt, centre, seed)
    if k_tv:
        train_to_val[:], notes[1] = _one_direction(val_images, train_images, k_tv, centre, seed)
    return Neighbours(val_to_train, train_to_val), notes
