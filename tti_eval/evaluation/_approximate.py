"""Approximate neighbours for pairs past exact reach (SPEC §9), with their recall against exact search measured.

`auto` searches exactly while n_train × n_val × dim stays below `EXACT_LIMIT` and approximately beyond. The
approximate search builds, for each direction, a faiss inverted-file index over the searched set with faiss's own
index factory, nlist ≈ √n. While a float32 copy of that set takes at most half of the memory available now, the
lists hold 4-bit product-quantisation codes scanned with faiss's SIMD "fast scan", and `reranked(k)` candidates
per query are re-ranked by their exact float32 distance (`IVF<nlist>,PQ<m>x4fs,RFlat`); beyond, 8-bit codes alone
(`IVF<nlist>,PQ<m>x8`). Scanning raw float32 rows (`IVF,Flat`) would be the simpler index, but at d = 512 it reads
2 KiB per candidate and ran ~10× slower here for the same recall; only sets too small to train codes get it.

How many lists each query visits (nprobe) is the smallest power of two that reaches `RECALL_TARGET` on one seeded
sample of queries, up to `MAX_SCANNED` of the lists on pairs past `EXACT_LIMIT`: an embedding set with little
structure (near-isotropic noise) needs nearly every list for that recall, and then the approximate search costs more
than the exact one, so it stops there and the note says the target was missed. The recall@k
reported is measured afresh on a second sample, against the exact float64 neighbours of `_neighbours`. As in the
exact search, both sets are centred on their common mean first, so that a nearly collapsed set keeps what float32
can resolve.
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
# Candidates re-ranked exactly beyond the k wanted: 4-bit codes misorder candidates near the k-th. At least 64 more
# (k = 11 on 200k × 20k low-dimensional synthetic embeddings: recall 0.998 with 88, 0.976 with 44, 0.878 with 22),
# and k more at large k (k = 100: 0.914 with 200 against 0.921 with 300; each candidate costs a 2 KiB read at d 512).
EXTRA_CANDIDATES = 64
# The largest share of the lists a query may visit (see above).
MAX_SCANNED = 1 / 4
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
    if n < 39 * 16:  # too few rows to train 16 centroids per sub-vector, and too few for scanning rows to cost much
        return f"IVF{nlist},Flat"
    # Codes over sub-vectors of ≥ 4 dimensions, the largest count that divides dim.
    sub_vectors = max(m for m in range(1, dim // 4 + 1) if dim % m == 0)
    if 4 * n * dim <= (available_bytes if available_bytes is not None else _available_bytes()) / 2:
        return f"IVF{nlist},PQ{sub_vectors}x4fs,RFlat"
    # Without room for the float32 rows: 8-bit codes (≥ 8× smaller than float32) once there are enough rows to train
    # 256 centroids each, 4-bit ones below.
    return f"IVF{nlist},PQ{sub_vectors}x{8 if n >= 39 * 256 else 4}"


def reranked(k: int) -> int:
    """Candidates per query whose exact distances decide its k neighbours, where the index keeps the rows."""
    return k + max(k, EXTRA_CANDIDATES)


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
    if isinstance(index, faiss.IndexRefine):
        index.k_factor = reranked(k) / k
    ivf = faiss.extract_index_ivf(index)
    rng = np.random.default_rng(seed)
    training = np.sort(rng.choice(len(base), min(len(base), 64 * ivf.nlist), replace=False))
    index.train(_centred(base[training], centre, np.float32)[0])
    for rows in row_chunks(len(base), _ROWS):
        index.add(_centred(base[rows], centre, np.float32)[0])

    sample = rng.permutation(len(queries))[: 2 * SAMPLED_QUERIES]
    tune, measure = (sample[: len(sample) // 2], sample[len(sample) // 2 :]) if len(sample) > 1 else (sample, sample)
    tune, measure = np.sort(tune), np.sort(measure)
    exact_tune = search_neighbours(base, queries[tune], k_val_to_train=k).val_to_train
    affordable = len(queries) * len(base) * base.shape[1] < EXACT_LIMIT  # forced on a small pair: no cost to cap
    most = ivf.nlist if affordable else max(1, int(ivf.nlist * MAX_SCANNED))
    ivf.nprobe = 1
    while recall_at_k(_search(index, queries[tune], centre, k), exact_tune) < RECALL_TARGET and ivf.nprobe < most:
        ivf.nprobe = min(2 * ivf.nprobe, most)
    nprobe = ivf.nprobe
    found = _search(index, queries, centre, k)
    short = np.flatnonzero((found < 0).any(axis=1))  # the visited lists held fewer than k rows
    if len(short):
        ivf.nprobe = ivf.nlist
        found[short] = _search(index, queries[short], centre, k)
    exact_measure = search_neighbours(base, queries[measure], k_val_to_train=k).val_to_train
    recall = recall_at_k(found[measure], exact_measure)
    candidates = f", {reranked(k)} candidates re-ranked" if isinstance(index, faiss.IndexRefine) else ""
    missed = (
        f" The {RECALL_TARGET} target was not reached by visiting {nprobe} of {ivf.nlist} lists, the most allowed: "
        "these embeddings have little structure for an index to use; --search exact gives exact scores."
        if recall < RECALL_TARGET and nprobe == most
        else ""
    )
    note = (
        f"Approximate search ({description}, nprobe {nprobe}{candidates}): recall@{k} {recall:.3f} against exact "
        f"search on {len(measure)} sampled queries.{missed}"
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
