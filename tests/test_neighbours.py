"""The shared neighbour search against a slow float64 reference written here, in the regimes where float32 fails."""

import json
import os
import subprocess
import sys

import faiss
import numpy as np
import pytest

from tti_eval.common.base import Embeddings
from tti_eval.common.errors import TTIEvalError
from tti_eval.evaluation import I2IRetrievalEvaluator, WeightedKNNClassifier
from tti_eval.evaluation import _approximate as approximate
from tti_eval.evaluation import _neighbours as neighbours
from tti_eval.evaluation._approximate import EXACT_LIMIT, Search, is_approximate, parse_search, recall_at_k
from tti_eval.evaluation._collapse import collapse_note, mean_pair_cosine
from tti_eval.evaluation._neighbours import search_neighbours
from tti_eval.evaluation.run import evaluate_embeddings


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


def test_counts_per_query_match_the_float64_reference_and_pad_with_minus_one():
    rng = np.random.default_rng(8)
    for train, val in (
        (near_collapsed(rng, 500, 40), near_collapsed(rng, 150, 40)),
        (lattice(rng, 300, 12), lattice(rng, 90, 12)),
    ):
        k_vt, k_tv = rng.integers(0, 30, len(val)), rng.integers(0, 60, len(train))
        found = search_neighbours(train, val, k_vt, k_tv, tile=64)
        for ids, queries, others, k in ((found.val_to_train, val, train, k_vt), (found.train_to_val, train, val, k_tv)):
            assert ids.shape == (len(queries), k.max())
            expected = reference(queries, others, k.max())
            for row, count in enumerate(k):
                assert ids[row, :count].tolist() == expected[row, :count].tolist()
                assert (ids[row, count:] == -1).all()


def test_i2ir_asks_each_query_for_its_class_size_in_validation_capped_at_k():
    rng = np.random.default_rng(9)
    train = Embeddings(images=rng.normal(size=(50, 8)).astype(np.float32), labels=rng.integers(0, 6, 50))
    val = Embeddings(images=rng.normal(size=(30, 8)).astype(np.float32), labels=rng.integers(0, 5, 30))
    spec = I2IRetrievalEvaluator.spec
    for k in (3, 100):
        _, counts = spec.neighbour_request(spec.parse_params({"k": k}), train, val)
        assert counts.tolist() == [min(k, int((val.labels == label).sum())) for label in train.labels]
    assert WeightedKNNClassifier.spec.neighbour_request(WeightedKNNClassifier.spec.parse_params(), train, val) == (
        11,
        0,
    )


def test_shared_neighbours_missing_a_querys_count_are_refused():
    rng = np.random.default_rng(10)
    train = Embeddings(images=rng.normal(size=(40, 8)).astype(np.float32), labels=np.repeat(np.arange(4), 10))
    val = Embeddings(images=rng.normal(size=(20, 8)).astype(np.float32), labels=np.repeat(np.arange(4), 5))
    enough = search_neighbours(train.images, val.images, 0, 5)
    assert (
        I2IRetrievalEvaluator(train, val, neighbours=enough).evaluate() == I2IRetrievalEvaluator(train, val).evaluate()
    )
    short = np.full(len(train.images), 5)
    short[7] = 4  # one train image asked for one neighbour too few
    with pytest.raises(ValueError, match="shared neighbours"):
        I2IRetrievalEvaluator(train, val, neighbours=search_neighbours(train.images, val.images, 0, short))


class _FakeGpu:
    """Stands in for GPU faiss: a float32 backend whose every distance is off by up to `slack` times the error bound
    the proof allows, in random directions, and that counts the tiles it computed."""

    def __init__(self, slack: float, seed: int = 0) -> None:
        self.slack, self.tiles, self.rng = slack, 0, np.random.default_rng(seed)

    def pairwise_distance_gpu(self, resources, left: np.ndarray, right: np.ndarray, D: np.ndarray) -> None:
        assert isinstance(resources, _FakeResources) and left.dtype == right.dtype == D.dtype == np.float32
        self.tiles += 1
        left64, right64 = left.astype(np.float64), right.astype(np.float64)
        exact = ((left64[:, None, :] - right64[None, :, :]) ** 2).sum(axis=-1)
        norms = np.linalg.norm(left64, axis=1)[:, None] + np.linalg.norm(right64, axis=1)[None, :]
        bound = neighbours._error_factor(left.shape[1], 2.0**-24) * norms**2
        D[:] = exact + self.slack * bound * self.rng.uniform(-1, 1, exact.shape)


class _FakeResources:
    pass


@pytest.mark.parametrize("data", ["near_collapsed", "spread"])
def test_tiles_go_to_the_gpu_when_faiss_has_one_and_stay_exact(data, monkeypatch):
    rng = np.random.default_rng(12)
    if data == "near_collapsed":
        train, val = near_collapsed(rng, 300, 24), near_collapsed(rng, 90, 24)
    else:
        train, val = rng.normal(size=(300, 24)).astype(np.float32), rng.normal(size=(90, 24)).astype(np.float32)
    fake = _FakeGpu(slack=0.999)
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "StandardGpuResources", _FakeResources, raising=False)
    monkeypatch.setattr(faiss, "pairwise_distance_gpu", fake.pairwise_distance_gpu)
    monkeypatch.setattr(faiss, "pairwise_L2sqr", None)  # the CPU tiles must not run
    assert_exact(train, val, 11, 40, tile=64)
    assert fake.tiles == 5 * 2  # 300 train × 90 validation rows in tiles of 64


_RUN_ELSEWHERE = """
import hashlib, json, sys
import faiss, numpy as np
sys.path.insert(0, {tests!r})
from test_neighbours import lattice, near_collapsed
from tti_eval.common.base import Embeddings
from tti_eval.common.errors import TTIEvalError
from tti_eval.evaluation import I2IRetrievalEvaluator, WeightedKNNClassifier
from tti_eval.evaluation import _approximate as approximate
from tti_eval.evaluation._approximate import EXACT_LIMIT, Search, is_approximate, parse_search, recall_at_k
from tti_eval.evaluation._collapse import collapse_note, mean_pair_cosine
from tti_eval.evaluation._neighbours import search_neighbours
from tti_eval.evaluation.run import evaluate_embeddings
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


# ---------------------------------------------------------------- collapse note


def test_mean_pair_cosine_matches_a_loop_over_the_same_pairs():
    rng = np.random.default_rng(8)
    train, val = rng.normal(size=(30, 5)), rng.normal(size=(12, 5))
    images = np.concatenate([train, val])
    pick = np.random.default_rng(3)
    first = pick.integers(0, len(images), 64)
    second = (first + pick.integers(1, len(images), 64)) % len(images)
    expected = np.mean(
        [
            images[i] @ images[j] / np.linalg.norm(images[i]) / np.linalg.norm(images[j])
            for i, j in zip(first, second, strict=True)
        ]
    )
    assert mean_pair_cosine(train, val, pairs=64, seed=3) == pytest.approx(expected, abs=1e-12)


def test_a_collapsed_pair_is_noted_on_every_result_and_a_spread_one_is_not():
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 3, 200)
    spread = rng.normal(size=(200, 16)).astype(np.float32)
    for images, noted in ((spread, False), (near_collapsed(rng, 200, 16), True)):
        train = Embeddings(images=images[:150], labels=labels[:150])
        val = Embeddings(images=images[150:], labels=labels[150:])
        run = evaluate_embeddings(train, val, [WeightedKNNClassifier, I2IRetrievalEvaluator], n_resamples=20)
        assert len(run.results) == 2
        for result in run.results:
            assert ("its scores say more about the model's degeneracy than about the data" in result.note) is noted
    assert collapse_note(spread[:150], spread[150:]) == ""


# ---------------------------------------------------------------- approximate search


def test_recall_at_k_matches_a_loop_reference():
    rng = np.random.default_rng(10)
    exact = np.array([rng.permutation(50)[:7] for _ in range(40)])
    found = np.where(rng.random(exact.shape) < 0.3, rng.integers(50, 60, exact.shape), exact)[:, ::-1]
    expected = np.mean([len(set(f) & set(e)) / 7 for f, e in zip(found, exact, strict=True)])
    assert recall_at_k(found, exact) == pytest.approx(expected, abs=1e-12)
    assert recall_at_k(exact, exact) == 1.0


def test_search_modes_and_the_auto_threshold():
    assert not is_approximate("auto", 1000, 1000, EXACT_LIMIT // 10**6 - 1)
    assert is_approximate("AUTO", 1000, 1000, EXACT_LIMIT // 10**6)
    assert is_approximate("Approximate", 2, 2, 2) and not is_approximate(Search.EXACT, 10**6, 10**6, 10**3)
    with pytest.raises(TTIEvalError, match="choose exact, approximate or auto"):
        parse_search("fast")


def structured(rng: np.random.Generator, n: int, classes: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings with the low intrinsic dimension of a real model's: class centres plus variation in a 4-dimensional
    subspace of the 32 dimensions, and a little isotropic noise."""
    labels = rng.integers(0, classes, n)
    centres, basis = np.random.default_rng(0).normal(size=(classes, 32)), np.random.default_rng(1).normal(size=(4, 32))
    images = centres[labels] + rng.normal(size=(n, 4)) @ basis + 0.1 * rng.normal(size=(n, 32))
    return images.astype(np.float32), labels


@pytest.mark.parametrize("memory", [None, 0])  # 0: no memory to spare, so product quantisation alone
def test_forced_approximate_search_reports_its_measured_recall(memory, monkeypatch):
    if memory is not None:
        monkeypatch.setattr(approximate, "_available_bytes", lambda: memory)
    images, labels = structured(np.random.default_rng(11), 3000)
    train, val = (
        Embeddings(images=images[:2400], labels=labels[:2400]),
        Embeddings(images=images[2400:], labels=labels[2400:]),
    )
    run = evaluate_embeddings(
        train, val, [WeightedKNNClassifier, I2IRetrievalEvaluator], n_resamples=20, search="approximate"
    )
    exact = search_neighbours(train.images, val.images, 11, 100)
    found, notes = approximate.approximate_neighbours(train.images, val.images, 11, 100)
    for result, k, direction, truth, ids in zip(
        run.results,
        (11, 100),
        (0, 1),
        (exact.val_to_train, exact.train_to_val),
        (found.val_to_train, found.train_to_val),
        strict=True,
    ):
        assert result.approximate and notes[direction] in result.note
        # 4-bit codes re-ranked exactly while the rows fit in memory, codes alone beyond; a set too small to train
        # codes (the 600 validation rows) is scanned row by row
        index = "Flat" if direction == 1 else "PQ8x4fs,RFlat" if memory is None else "PQ8x4"
        assert f",{index}, nprobe" in notes[direction] and f"recall@{k} " in notes[direction]
        reported = float(notes[direction].split(f"recall@{k} ")[1].split()[0])
        # the sample's recall estimates the recall over all queries
        assert reported == pytest.approx(recall_at_k(ids, truth), abs=0.06)
        assert ids.min() >= 0 and ids.shape == truth.shape
        if memory is None:  # re-ranked candidates reach the target on structured embeddings
            assert reported >= approximate.RECALL_TARGET and "target was not reached" not in notes[direction]
    exact_run = evaluate_embeddings(train, val, [WeightedKNNClassifier], n_resamples=20, search="exact")
    assert not exact_run.results[0].approximate and "Approximate" not in exact_run.results[0].note


@pytest.mark.parametrize("limit", [10**6, EXACT_LIMIT])
def test_approximate_search_on_structureless_embeddings_stops_at_the_scan_limit_and_says_so(limit, monkeypatch):
    # isotropic noise in 32 dimensions: an index needs nearly every list for 95 % recall; the scan is capped only
    # when the pair is past exact reach (a 4000 × 700 × 32 pair is, with the limit lowered to 1e6)
    monkeypatch.setattr(approximate, "EXACT_LIMIT", limit)
    rng = np.random.default_rng(12)
    train, val = rng.normal(size=(4000, 32)).astype(np.float32), rng.normal(size=(700, 32)).astype(np.float32)
    found, notes = approximate.approximate_neighbours(train, val, k_val_to_train=11)
    nlist = round(np.sqrt(4000))
    reported = float(notes[0].split("recall@11 ")[1].split()[0])
    most = nlist if limit == EXACT_LIMIT else int(nlist * approximate.MAX_SCANNED)
    assert f"IVF{nlist},PQ8x4fs,RFlat, nprobe {most}," in notes[0] and reported < approximate.RECALL_TARGET
    assert f"The 0.95 target was not reached by visiting {most} of {nlist} lists" in notes[0]
    assert reported == pytest.approx(recall_at_k(found.val_to_train, reference(val, train, 11)), abs=0.06)
