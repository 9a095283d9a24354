"""The shared neighbour search against a slow float64 reference written here, in the regimes where float32 fails."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tti_eval.evaluation._neighbours import search_neighbours


def reference(queries: np.ndarray, others: np.ndarray, k: int) -> np.ndarray:
    """Each query's k nearest others by float64 squared distance between unit rows, ties to the lower index."""
    q = queries.astype(np.float64) / np.sqrt((queries.astype(np.float64) ** 2).sum(axis=1, keepdims=True))
    o = others.astype(np.float64) / np.sqrt((others.astype(np.float64) ** 2).sum(axis=1, keepdims=True))
    distances = ((q[:, None, :] - o[None, :, :]) ** 2).sum(axis=-1)
    return np.array([np.argsort(row, kind="stable")[:k] for row in distances])


def assert_exact(train: np.ndarray, val: np.ndarray, k_val_to_train: int, k_train_to_val: int, tile: int) -> None:
    found = search_neighbours(train, val, k_val_to_train, k_train_to_val, tile=tile)
    np.testing.assert_array_equal(found.val_to_train, reference(val, train, min(k_val_to_train, len(train))))
    np.testing.assert_array_equal(found.train_to_val, reference(train, val, min(k_train_to_val, len(val))))


def near_collapsed(rng, n: int, dim: int, spread: float = 1e-4) -> np.ndarray:
    """Every row within `spread` of one direction, like the embeddings of an untrained model."""
    direction = np.random.default_rng(7).normal(size=dim)
    return (direction + spread * rng.normal(size=(n, dim))).astype(np.float32)


def lattice(rng, n: int, dim: int) -> np.ndarray:
    """Rows with four entries ±0.5 and zeros elsewhere: unit norm exactly, so that distances are exact multiples of
    1/4 and most of them tie exactly."""
    rows = np.zeros((n, dim), dtype=np.float32)
    for row in rows:
        row[rng.choice(dim, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return rows


# Small sets with few dimensions, which faiss computes directly, and larger ones, which it hands to BLAS.
SHAPES = {"small": (40, 12, 8), "large": (600, 250, 96)}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("tile", [7, 2048])
def test_near_collapsed_sets_match_the_float64_reference(shape, tile):
    rng = np.random.default_rng(1)
    n_train, n_val, dim = SHAPES[shape]
    assert_exact(near_collapsed(rng, n_train, dim), near_collapsed(rng, n_val, dim), 11, 100, tile)


@pytest.mark.parametrize("spread", [1e-2, 1e-6])
def test_collapse_at_other_scales_matches_the_float64_reference(spread):
    rng = np.random.default_rng(2)
    assert_exact(near_collapsed(rng, 300, 64, spread), near_collapsed(rng, 120, 64, spread), 11, 40, 64)


@pytest.mark.parametrize("tile", [5, 2048])
def test_lattice_with_many_exact_ties_matches_the_float64_reference(tile):
    rng = np.random.default_rng(3)
    assert_exact(lattice(rng, 300, 12), lattice(rng, 90, 12), 11, 40, tile)


def test_duplicates_and_near_exact_ties_match_the_float64_reference():
    rng = np.random.default_rng(4)
    val = rng.normal(size=(60, 32)).astype(np.float32)
    nudged = val + 1e-6 * rng.normal(size=val.shape).astype(np.float32)  # near-exact ties around every copy
    train = np.concatenate([rng.normal(size=(100, 32)), val, val, nudged, 3 * val]).astype(np.float32)
    assert_exact(train[rng.permutation(len(train))], val, 11, 20, 64)


def test_well_spread_sets_match_the_float64_reference():
    rng = np.random.default_rng(5)
    assert_exact(
        rng.normal(size=(700, 48)).astype(np.float32), rng.normal(size=(200, 48)).astype(np.float32), 11, 100, 256
    )


_RUN_ELSEWHERE = """
import hashlib, json, sys
import faiss, numpy as np
sys.path.insert(0, {tests!r})
from test_neighbours import lattice, near_collapsed
from tti_eval.evaluation._neighbours import search_neighbours
faiss.omp_set_num_threads({threads})
rng = np.random.default_rng(6)
digests = []
sets = [(near_collapsed(rng, 3000, 96), near_collapsed(rng, 900, 96)), (lattice(rng, 900, 10), lattice(rng, 300, 10))]
for train, val in sets:
    found = search_neighbours(train, val, 11, 100, tile={tile})
    digests.append(hashlib.sha256(found.val_to_train.tobytes() + found.train_to_val.tobytes()).hexdigest())
print(json.dumps(digests))
"""


def test_neighbours_are_identical_for_every_thread_count_and_tile():
    outputs = set()
    for threads, tile in ((1, 2048), (2, 2048), (os.cpu_count() or 1, 2048), (2, 300)):
        environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
        script = _RUN_ELSEWHERE.format(tests=os.path.dirname(__file__), threads=threads, tile=tile)
        done = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        outputs.add(tuple(json.loads(done.stdout)))
    assert len(outputs) == 1
