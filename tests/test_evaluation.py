"""The evaluators against slow, obviously correct references written here with loops and full distance matrices."""

import copy
import math
import warnings

import faiss
import numpy as np
import pytest

from tti_eval.common.base import Embeddings
from tti_eval.common.errors import InvalidEmbeddingsError, UnknownTitleError
from tti_eval.evaluation import (
    EVALUATORS,
    I2IRetrievalEvaluator,
    LinearProbeClassifier,
    WeightedKNNClassifier,
    ZeroShotClassifier,
    get_evaluator,
)
from tti_eval.evaluation._metrics import bootstrap, classification_scores, mean_per_class_recall, top_k_hits
from tti_eval.evaluation._neighbours import search_neighbours
from tti_eval.evaluation.utils import normalize, softmax

# ---------------------------------------------------------------- references: plain loops, float64, full matrices


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.sqrt((x**2).sum(axis=1, keepdims=True))


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[len(a), len(b)] squared L2 distances between the normalised rows."""
    a, b = unit(a), unit(b)
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=-1)


def nearest(distances_row: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(distances_row, kind="stable")[:k]  # equal distances: lower index first


def reference_wknn(train: Embeddings, val: Embeddings, num_classes: int, k: int = 11):
    distances = squared_distances(val.images, train.images)
    probabilities = np.zeros((len(val.images), num_classes))
    for i, row in enumerate(distances):
        chosen = nearest(row, min(k, len(train.images)))
        exact = [train.labels[j] for j in chosen if row[j] == 0]
        if exact:  # exact matches win: most of them takes all, ties share
            counts = np.bincount(exact, minlength=num_classes)
            winners = counts == counts.max()
            probabilities[i] = winners / winners.sum()
        else:
            votes = np.zeros(num_classes)
            for j in chosen:
                votes[train.labels[j]] += 1 / row[j]
            e = np.exp(votes - votes.max())
            probabilities[i] = e / e.sum()
    return probabilities, probabilities.argmax(axis=1)


def reference_i2ir(train: Embeddings, val: Embeddings, k: int = 100) -> float:
    distances = squared_distances(train.images, val.images)
    scores = []
    for i, row in enumerate(distances):
        label = train.labels[i]
        q = min(k, len(val.images), int((val.labels == label).sum()))
        if q == 0:
            scores.append(0.0)
            continue
        chosen = nearest(row, q)
        scores.append(sum(val.labels[j] == label for j in chosen) / q)
    return float(np.mean(scores))


def reference_zero_shot(train: Embeddings, val: Embeddings):
    logits = unit(val.images) @ unit(train.classes).T
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = e / e.sum(axis=1, keepdims=True)
    return probabilities, probabilities.argmax(axis=1)


# ---------------------------------------------------------------- data


def clustered(rng, n: int, num_classes: int, dim: int = 16, spread: float = 2.5, labels=None):
    """Images around one centre per class, so that the scores are far from both chance and 1."""
    centres = np.random.default_rng(1234).normal(size=(num_classes, dim))
    labels = rng.integers(0, num_classes, n) if labels is None else np.asarray(labels)
    return (centres[labels] + spread * rng.normal(size=(n, dim))).astype(np.float32), labels


def pair(seed=0, n_train=150, n_val=60, num_classes=6, dim=16, with_classes=True, val_classes=None):
    rng = np.random.default_rng(seed)
    train_images, train_labels = clustered(rng, n_train, num_classes, dim)
    val_label_pool = np.arange(num_classes) if val_classes is None else np.asarray(val_classes)
    val_images, val_labels = clustered(rng, n_val, num_classes, dim, labels=rng.choice(val_label_pool, n_val))
    classes = rng.normal(size=(num_classes, dim)).astype(np.float32) * 3 if with_classes else None
    return (
        Embeddings(images=train_images, labels=train_labels, classes=classes),
        Embeddings(images=val_images, labels=val_labels),
    )


def with_duplicates(train: Embeddings, val: Embeddings, copies: int = 1, step: int = 3) -> Embeddings:
    """Train plus exact copies of every `step`-th validation image, under the validation label."""
    chosen = np.arange(0, len(val.images), step)
    images = np.concatenate([train.images, *[val.images[chosen]] * copies])
    labels = np.concatenate([train.labels, *[val.labels[chosen]] * copies])
    return Embeddings(images=images, labels=labels, classes=train.classes)


def collapsed(train: Embeddings, val: Embeddings, spread: float = 1e-4) -> tuple[Embeddings, Embeddings]:
    """Both sets squeezed to within `spread` of one direction, like an untrained model's embeddings."""
    direction = np.random.default_rng(99).normal(size=train.images.shape[1])
    squeeze = lambda e: Embeddings(  # noqa: E731
        images=(direction + spread * e.images).astype(np.float32), labels=e.labels, classes=e.classes
    )
    return squeeze(train), squeeze(val)


CASES = {
    "clustered": lambda: pair(),
    "near-collapsed": lambda: collapsed(*pair(seed=6)),
    "exact duplicates": lambda: (lambda t, v: (with_duplicates(t, v), v))(*pair(seed=1)),
    "absent from validation": lambda: pair(seed=2, val_classes=[0, 2, 3]),
    "single class": lambda: pair(seed=3, num_classes=1, n_train=40, n_val=12),
    "k above train size": lambda: pair(seed=4, n_train=7, n_val=20),
}


@pytest.fixture(params=list(CASES), scope="module")
def case(request) -> tuple[Embeddings, Embeddings]:
    return CASES[request.param]()


# ---------------------------------------------------------------- wKNN


@pytest.mark.parametrize("extra_classes", [0, 3])
def test_wknn_matches_reference(case, extra_classes):
    train, val = case
    num_classes = int(max(train.labels.max(), val.labels.max())) + 1 + extra_classes
    knn = WeightedKNNClassifier(train, val, num_classes=num_classes)
    probabilities, predicted = knn.predict()
    expected_probabilities, expected = reference_wknn(train, val, num_classes)
    assert probabilities.shape == (len(val.images), num_classes)
    np.testing.assert_allclose(probabilities, expected_probabilities, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(predicted, expected)
    assert knn.evaluate() == pytest.approx((expected == val.labels).mean())


def test_wknn_two_exact_copies_of_every_validation_image_score_one():
    train, val = pair(seed=5)
    train = with_duplicates(train, val, copies=2, step=1)  # the original tool overflowed to NaN here: 0.15
    probabilities, _ = WeightedKNNClassifier(train, val).predict()
    assert np.isfinite(probabilities).all()
    assert WeightedKNNClassifier(train, val).evaluate() == 1.0


def test_wknn_exact_matches_outvote_everything_and_share_ties():
    e = np.eye(4, dtype=np.float32)
    # validation image 0 equals train images of class 2 (twice) and class 1 (once); image 1 equals one of each
    train = Embeddings(images=[e[0], e[0], e[0], e[1], e[1], e[2]], labels=[2, 2, 1, 0, 1, 3])
    val = Embeddings(images=[e[0], e[1]], labels=[2, 0])
    probabilities, predicted = WeightedKNNClassifier(train, val).predict()
    np.testing.assert_array_equal(probabilities, [[0, 0, 1, 0], [0.5, 0.5, 0, 0]])
    np.testing.assert_array_equal(predicted, [2, 0])  # an even split goes to the lower class, like argmax


def test_wknn_tied_votes_go_to_the_lower_class():
    e = np.eye(3, dtype=np.float32)
    train = Embeddings(images=[e[1], e[0]], labels=[1, 0])  # both at squared distance 2 from e[2]
    val = Embeddings(images=[e[2]], labels=[1])
    probabilities, predicted = WeightedKNNClassifier(train, val).predict()
    np.testing.assert_allclose(probabilities, [[0.5, 0.5]])
    assert predicted.tolist() == [0]


# ---------------------------------------------------------------- I2IR, zero-shot, linear probe


@pytest.mark.parametrize("k", [100, 5])
def test_i2ir_matches_reference(case, k):
    train, val = case
    assert I2IRetrievalEvaluator(train, val, k=k).evaluate() == pytest.approx(reference_i2ir(train, val, k), abs=1e-12)


def test_zero_shot_matches_reference(case):
    train, val = case
    probabilities, predicted = ZeroShotClassifier(train, val).predict()
    expected_probabilities, expected = reference_zero_shot(train, val)
    np.testing.assert_allclose(probabilities, expected_probabilities, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(predicted, expected)


def test_zero_shot_without_class_embeddings_says_so():
    train, val = pair(with_classes=False)
    with pytest.raises(InvalidEmbeddingsError, match="class embeddings"):
        ZeroShotClassifier(train, val)


@pytest.mark.parametrize(
    ("seed", "num_classes", "val_classes"),
    [(6, 8, [0, 1, 2, 4]), (13, 2, None), (14, 3, [1]), (15, 30, None)],
    ids=["multinomial, classes absent", "binomial", "three classes", "thirty classes"],
)
def test_linear_probe_is_sklearn_logistic_regression(seed, num_classes, val_classes):
    """scikit-learn itself is the reference, given float64 as the scikit-learn of the original tool's day converted
    it for lbfgs: same iterations and predictions, probabilities equal but for float32 rounding."""
    from sklearn.linear_model import LogisticRegression

    train, val = pair(seed=seed, num_classes=num_classes, val_classes=val_classes, n_train=40 * num_classes)
    probe = LinearProbeClassifier(train, val, num_classes=num_classes + 2)
    train_64, val_64 = normalize(train.images).astype(np.float64), normalize(val.images).astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a ConvergenceWarning where the probe notes it
        reference = LogisticRegression(random_state=0).fit(train_64, train.labels)
    probabilities, predicted = probe.predict()
    np.testing.assert_allclose(probabilities[:, reference.classes_], reference.predict_proba(val_64), atol=2e-6)
    assert probabilities.shape == (len(val.images), num_classes + 2) and not probabilities[:, num_classes:].any()
    np.testing.assert_array_equal(predicted, reference.predict(val_64))
    assert probe.evaluate() == reference.score(val_64, val.labels)
    assert probe.model.iterations == reference.n_iter_[0]
    np.testing.assert_allclose(probe.model.weights, reference.coef_, atol=2e-5)


def test_logistic_regression_blocks_rows_and_warm_starts_change_nothing(monkeypatch):
    from tti_eval.evaluation import _logistic_regression as logistic_regression

    train, _ = pair(seed=16, n_train=300)
    images = normalize(train.images)
    whole = logistic_regression.fit_logistic_regression(images, train.labels, 6)
    monkeypatch.setattr(logistic_regression, "BLOCK_ELEMENTS", 6 * 7)  # blocks of 256 rows
    blocked = logistic_regression.fit_logistic_regression(images, train.labels, 6)
    np.testing.assert_allclose(blocked.weights, whole.weights, atol=1e-5)
    assert blocked.iterations == whole.iterations and not whole.stop_reason

    rows = np.arange(1, 300, 2)
    subset = logistic_regression.fit_logistic_regression(images[rows], train.labels[rows], 6)
    indexed = logistic_regression.fit_logistic_regression(images, train.labels[rows], 6, rows=rows)
    np.testing.assert_array_equal(indexed.weights, subset.weights)

    again = logistic_regression.fit_logistic_regression(images, train.labels, 6, initial=whole)
    assert again.iterations <= 1
    np.testing.assert_allclose(again.weights, whole.weights, atol=1e-4)


def test_linear_probe_notes_a_solver_stopped_at_its_limit(monkeypatch):
    from functools import partial

    from tti_eval.evaluation import _logistic_regression

    fit = _logistic_regression.fit_logistic_regression
    monkeypatch.setattr(_logistic_regression, "fit_logistic_regression", partial(fit, max_iter=2))
    train, val = pair(seed=17)
    probe = LinearProbeClassifier(train, val)
    assert probe.model.iterations == 2
    assert "limit of 2 iterations" in " ".join(probe.notes)


def test_linear_probe_maps_columns_to_labels_when_train_lacks_a_class():
    train, val = pair(seed=7, num_classes=4, n_train=80)
    keep = train.labels != 1
    train = Embeddings(images=train.images[keep], labels=train.labels[keep])
    probabilities, predicted = LinearProbeClassifier(train, val).predict()
    assert not probabilities[:, 1].any() and 1 not in predicted
    np.testing.assert_array_equal(predicted, probabilities.argmax(axis=1))


def test_linear_probe_cross_validation_sees_only_train():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold

    train, val = pair(seed=8, n_train=120, num_classes=3, dim=8)
    probe = LinearProbeClassifier(train, val, cross_validate=True)
    search = GridSearchCV(
        LogisticRegression(random_state=0, max_iter=1000),
        {"C": [1e-3, 1e-2, 1e-1, 1, 10, 100, 1000]},
        cv=StratifiedKFold(5),
    ).fit(normalize(train.images), train.labels)
    assert search.best_params_["C"] == probe.C
    assert f"C = {probe.C:g}" in " ".join(probe.notes)
    # Whatever the validation set holds, the fitted model is the same.
    other_val = Embeddings(images=-val.images[::-1], labels=(val.labels[::-1] + 1) % 3)
    other = LinearProbeClassifier(train, other_val, cross_validate=True)
    np.testing.assert_array_equal(other.model.weights, probe.model.weights)


def test_linear_probe_on_a_single_train_class_predicts_it():
    train, val = pair(seed=9, num_classes=1, n_train=20, n_val=10)
    probe = LinearProbeClassifier(train, val, num_classes=3)
    probabilities, predicted = probe.predict()
    np.testing.assert_array_equal(probabilities, np.tile([1.0, 0, 0], (10, 1)))
    assert probe.evaluate() == 1.0 and probe.notes


# ---------------------------------------------------------------- shared contract


def all_evaluators(train, val, **kwargs):
    return [cls(train, val, **kwargs) for cls in EVALUATORS.values()]


def test_inputs_are_never_modified():
    train, val = pair(seed=10)
    before = copy.deepcopy((train, val))
    for evaluator in all_evaluators(train, val):
        evaluator.scores(n_resamples=10)
    for original, after in zip(before, (train, val), strict=True):
        np.testing.assert_array_equal(original.images, after.images)
        np.testing.assert_array_equal(original.labels, after.labels)
    np.testing.assert_array_equal(before[0].classes, train.classes)


def test_no_global_state_changes():
    import tqdm
    import tqdm.auto

    state = lambda: (  # noqa: E731
        vars(tqdm.tqdm).get("__init__"),  # the original tool swapped this for one with disable=True, for good
        vars(tqdm.auto.tqdm).get("__init__"),
        list(warnings.filters),
        np.geterr(),
        faiss.omp_get_max_threads(),
    )
    before = state()
    train, val = pair(seed=11)
    for evaluator in all_evaluators(train, val):
        evaluator.evaluate()
    LinearProbeClassifier(train, val, cross_validate=True).evaluate()
    assert state() == before


@pytest.mark.parametrize("where", ["train", "validation", "classes"])
@pytest.mark.parametrize("bad", [0.0, np.nan, np.inf])
def test_zero_and_non_finite_vectors_are_rejected(where, bad):
    train, val = pair(seed=12)
    target = {"train": train.images, "validation": val.images, "classes": train.classes}[where]
    target[3] = 0.0
    target[3, 0] = bad
    evaluators = [ZeroShotClassifier] if where == "classes" else list(EVALUATORS.values())
    for cls in evaluators:
        with pytest.raises(InvalidEmbeddingsError):
            cls(train, val)


def test_num_classes_below_the_labels_seen_is_an_error():
    train, val = pair(num_classes=6)
    for cls in (WeightedKNNClassifier, I2IRetrievalEvaluator, LinearProbeClassifier):
        with pytest.raises(InvalidEmbeddingsError, match="6 classes but only 4"):
            cls(train, val, num_classes=4)


def test_evaluators_are_found_by_title_in_any_case():
    assert get_evaluator("wknn") is WeightedKNNClassifier and get_evaluator("i2ir") is I2IRetrievalEvaluator
    with pytest.raises(UnknownTitleError, match="Did you mean 'I2IR'"):
        get_evaluator("I2R")


def test_the_original_tools_defaults_are_declared():
    """SPEC §5's numbers, checked once here against the declarations every other default is read from."""
    assert WeightedKNNClassifier.get_default_params() == {"k": 11}
    assert I2IRetrievalEvaluator.get_default_params() == {"k": 100}
    linear = LinearProbeClassifier.get_default_params()
    assert linear["C"] == 1.0 and not linear["cross_validate"]
    assert linear["C_grid"] == tuple(10.0**e for e in range(-3, 4))


def test_utils_match_their_definitions():
    x = np.array([[3.0, 4.0], [1.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(normalize(x), [[0.6, 0.8], [1, 0]])
    assert normalize(x).dtype == np.float32 and x[0, 0] == 3.0
    np.testing.assert_allclose(softmax(np.array([[1000.0, 1000.0], [0.0, math.log(3)]])), [[0.5, 0.5], [0.25, 0.75]])


# ---------------------------------------------------------------- neighbour search


@pytest.mark.parametrize("tile", [5, 64, 2048])
def test_neighbours_match_faiss_exact_search(tile):
    rng = np.random.default_rng(13)
    train_images, val_images = (
        rng.normal(size=(300, 24)).astype(np.float32),
        rng.normal(size=(90, 24)).astype(np.float32),
    )
    found = search_neighbours(train_images, val_images, 11, 40, tile=tile)
    train_unit, val_unit = normalize(train_images), normalize(val_images)
    for queries, base, ids in ((val_unit, train_unit, found.val_to_train), (train_unit, val_unit, found.train_to_val)):
        index = faiss.IndexFlatL2(base.shape[1])
        index.add(base)
        _, expected = index.search(queries, ids.shape[1])
        # Same neighbours at the same distances; only the order of equal distances may differ.
        distances = squared_distances(queries, base)
        np.testing.assert_allclose(
            np.take_along_axis(distances, ids.astype(np.int64), axis=1),
            np.take_along_axis(distances, expected, axis=1),
            atol=1e-6,
        )
        assert (ids == expected).mean() > 0.99


def test_neighbours_cap_k_and_keep_exact_copies_first():
    rng = np.random.default_rng(14)
    val_images = rng.normal(size=(6, 8)).astype(np.float32)
    train_images = np.concatenate([rng.normal(size=(3, 8)), val_images[[4]], val_images[[4]]]).astype(np.float32)
    found = search_neighbours(train_images, val_images, 50, 50, tile=2)
    assert found.val_to_train.shape == (6, 5) and found.train_to_val.shape == (5, 6)
    assert found.val_to_train[4, :2].tolist() == [3, 4]  # equal (zero) distances: lower index first
    assert sorted(found.val_to_train[0].tolist()) == list(range(5))


def test_shared_neighbours_give_the_same_results_as_separate_searches():
    train, val = CASES["exact duplicates"]()
    shared = search_neighbours(train.images, val.images, 11, 100)
    for cls in (WeightedKNNClassifier, I2IRetrievalEvaluator):
        alone, together = cls(train, val), cls(train, val, neighbours=shared)
        assert alone.scores(n_resamples=50) == together.scores(n_resamples=50)
    with pytest.raises(ValueError, match="shared neighbours"):
        WeightedKNNClassifier(train, val, neighbours=search_neighbours(train.images, val.images, 3, 0))


# ---------------------------------------------------------------- metrics


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    train, val = pair(seed=15, num_classes=12, n_train=240, n_val=120)
    knn = WeightedKNNClassifier(train, val)
    first, second = knn.scores(), knn.scores()
    assert first == second
    assert set(first) == {m.name for m in WeightedKNNClassifier.spec.metrics}
    assert first["accuracy"].value == knn.evaluate()
    for score in first.values():
        assert 0 <= score.low < score.value < score.high <= 1
    assert knn.scores(seed=1)["accuracy"] != first["accuracy"]
    retrieval = I2IRetrievalEvaluator(train, val).scores()
    assert list(retrieval) == ["r_precision"] and retrieval["r_precision"].low < retrieval["r_precision"].high


def test_bootstrap_resamples_with_replacement():
    items = np.array([0.0, 1.0])
    score = bootstrap(lambda i: items[i].mean(), 2, 0.5, n_resamples=2000, seed=0)
    assert (score.low, score.high) == (0.0, 1.0)  # all-zero and all-one draws happen a quarter of the time each


def test_top5_is_omitted_below_five_classes():
    train, val = pair(seed=16, num_classes=4)
    assert "top5_accuracy" not in WeightedKNNClassifier(train, val).scores(n_resamples=10)


def test_classification_metrics_match_their_definitions():
    rng = np.random.default_rng(17)
    probabilities = softmax(rng.normal(size=(200, 7)))
    probabilities[:5] = 1 / 7  # all tied: the true class ranks at its index
    labels = rng.integers(0, 7, 200)
    predicted = probabilities.argmax(axis=1)
    np.testing.assert_array_equal(top_k_hits(probabilities, labels, 1), predicted == labels)
    expected_top5 = [(np.argsort(-p, kind="stable")[:5] == y).any() for p, y in zip(probabilities, labels, strict=True)]
    np.testing.assert_array_equal(top_k_hits(probabilities, labels, 5), expected_top5)
    recalls = [(predicted[labels == c] == c).mean() for c in np.unique(labels)]
    assert mean_per_class_recall(labels, predicted == labels) == pytest.approx(np.mean(recalls))
    scores = classification_scores(labels, predicted, top_k_hits(probabilities, labels, 5), n_resamples=20)
    assert scores["top5_accuracy"].value == pytest.approx(np.mean(expected_top5))
