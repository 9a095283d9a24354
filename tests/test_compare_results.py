"""From evaluation results to comparisons: outcomes, pairing, per-class figures on every classifier result, the
test-split protocol and the self-describing evaluation JSON; each checked against a slow reference written here."""

from dataclasses import replace

import numpy as np
import pytest

from tti_eval.common.base import EmbeddingDefinition, Embeddings, Split
from tti_eval.common.cache import save_embeddings
from tti_eval.common.errors import TTIEvalError
from tti_eval.comparison import ModelOutcomes, compare_models, compare_results, result_outcomes
from tti_eval.comparison.compare import images_fingerprint
from tti_eval.evaluation import (
    I2IRetrievalEvaluator,
    LinearProbeClassifier,
    WeightedKNNClassifier,
    ZeroShotClassifier,
)
from tti_eval.evaluation._metrics import MEAN_PER_CLASS_RECALL
from tti_eval.evaluation.records import EvaluationFile, evaluation_file, from_record, to_record
from tti_eval.evaluation.run import evaluate_embeddings, run_evaluation

NAMES = [f"class {i}" for i in range(6)]


def synthetic(seed: int, n: int, spread: float, dim: int = 10) -> Embeddings:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(7).normal(size=(6, dim))
    labels = rng.integers(0, 6, n)
    return Embeddings(
        images=(centres[labels] + spread * rng.normal(size=(n, dim))).astype(np.float32),
        labels=labels,
        classes=centres.astype(np.float32),
    )


def evaluated(model: str, spread: float, evaluators=(WeightedKNNClassifier, I2IRetrievalEvaluator)):
    """Two 'models' of the same images: the same labels, embeddings of different quality."""
    train, validation = synthetic(1, 120, spread), synthetic(2, 80, spread)
    run = evaluate_embeddings(train, validation, evaluators, model=model, dataset="shapes", class_names=NAMES)
    assert not run.problems
    return run.results


def test_outcomes_of_results_are_their_per_image_correctness_and_scores():
    knn, i2ir = evaluated("sharp", 0.6)
    outcomes = result_outcomes(knn)
    reference = [1.0 if p == y else 0.0 for p, y in zip(knn.predictions, knn.labels, strict=True)]
    assert outcomes.kind == "correct" and outcomes.outcomes.tolist() == reference
    assert outcomes.metric == "Accuracy" and outcomes.class_names == tuple(NAMES)
    scores = result_outcomes(i2ir)
    assert scores.kind == "scores" and np.array_equal(scores.outcomes, i2ir.per_query_scores)
    with pytest.raises(TTIEvalError, match="not a mean over images"):
        result_outcomes(replace(knn, main_metric=MEAN_PER_CLASS_RECALL))


def test_compare_results_is_compare_models_on_the_results_outcomes():
    results = [*evaluated("sharp", 0.6), *evaluated("blurred", 2.5)]
    run = compare_results(results, n_resamples=200)
    by_hand = compare_models(
        [
            ModelOutcomes(
                model=r.model,
                dataset=r.dataset,
                evaluator=r.evaluator,
                split="validation",
                metric=r.main_metric.label,
                higher_is_better=True,
                kind="scores" if r.per_query_scores is not None else "correct",
                outcomes=r.per_query_scores if r.per_query_scores is not None else (r.predictions == r.labels) * 1.0,
                labels=None if r.predictions is None else r.labels,
                predictions=r.predictions,
                class_names=NAMES if r.predictions is not None else None,
            )
            for r in results
        ],
        n_resamples=200,
    )
    assert run.groups == by_hand.groups and run.leaderboards == by_hand.leaderboards
    (knn,) = [g for g in run.groups if g.evaluator == "wKNN"]
    assert knn.results[0].model == "sharp" and not knn.comparisons[0].tied_with_best


def test_results_that_cannot_be_compared_or_paired_are_left_out_with_a_sentence():
    sharp, blurred = (
        evaluated("sharp", 0.6, (WeightedKNNClassifier,)),
        evaluated("blurred", 2.5, (WeightedKNNClassifier,)),
    )
    odd = replace(blurred[0], model="odd", main_metric=MEAN_PER_CLASS_RECALL)
    fingerprint = {"split": "rule", "image_files": {}, "images": "a", "model": {"title": "sharp"}}
    sharp = [replace(sharp[0], fingerprints={"validation": fingerprint})]
    other = [replace(blurred[0], fingerprints={"validation": {**fingerprint, "images": "b"}})]
    problems = []
    run = compare_results([*sharp, *other, odd], n_resamples=50, on_problem=problems.append)
    assert not run.groups
    assert any("not a mean over images" in p for p in problems)
    assert any("'sharp' and 'blurred' cannot be paired" in p and "different images" in p for p in problems)
    with pytest.raises(TTIEvalError, match="cannot be paired"):
        compare_results([*sharp, *other], n_resamples=50)


def test_images_fingerprint_ignores_the_model_and_sees_the_images():
    base = {"split": "rule", "image_files": {"paths": {"/d": {"a.png": [1, 2]}}}, "images": None}
    first = {"train": {**base, "model": {"title": "a"}}, "validation": {**base, "model": {"title": "a"}}}
    second = {"train": {**base, "model": {"title": "b"}}, "validation": {**base, "model": {"title": "b"}}}
    moved = {**second, "validation": {**base, "image_files": {"paths": {"/d": {"a.png": [1, 3]}}}}}
    assert images_fingerprint(first) == images_fingerprint(second) != images_fingerprint(moved)
    assert images_fingerprint({"train": base, "validation": None}) is None


def test_every_classifier_result_carries_its_per_class_figures():
    (knn,) = evaluated("sharp", 1.2, (WeightedKNNClassifier,))
    figures = knn.per_class
    labels, predicted = knn.labels, knn.predictions
    for c, found in enumerate(figures.classes):
        mine = labels == c
        assert found.name == NAMES[c] and found.support == int(mine.sum())
        assert found.recall.value == pytest.approx(sum(predicted[mine] == c) / mine.sum())
        assert found.recall.low <= found.recall.value <= found.recall.high
        made = predicted == c
        assert found.precision == (pytest.approx(sum(labels[made] == c) / made.sum()) if made.any() else None)
    reference = [[int(sum((labels == t) & (predicted == p))) for p in range(6)] for t in range(6)]
    assert figures.confusion_matrix == reference
    (i2ir,) = evaluated("sharp", 1.2, (I2IRetrievalEvaluator,))
    assert i2ir.per_class is None
    skipped = evaluate_embeddings(
        synthetic(1, 120, 1.2), synthetic(2, 80, 1.2), [WeightedKNNClassifier], per_class=False
    )
    assert skipped.results[0].per_class is None  # a caller that shows no per-class figures does not pay for them


def reference_C_choice(train: Embeddings, validation: Embeddings, grid, refine: int) -> float:
    """The protocol with scikit-learn itself: accuracy on validation of a fit on train, over the grid, then over
    `refine` log-spaced values between the best and each grid neighbour; the first (smallest) best C wins."""
    from sklearn.linear_model import LogisticRegression

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def accuracy(C):
        model = LogisticRegression(C=C, random_state=0).fit(unit(train.images), train.labels)
        return (model.predict(unit(validation.images)) == validation.labels).mean()

    scores = {C: accuracy(C) for C in sorted(grid)}
    best = max(sorted(scores), key=scores.get)
    grid = sorted(grid)
    position = grid.index(best)
    for neighbour in {grid[max(position - 1, 0)], grid[min(position + 1, len(grid) - 1)]} - {best}:
        for j in range(1, refine + 1):
            C = float(np.exp(np.log(best) + j / (refine + 1) * (np.log(neighbour) - np.log(best))))
            scores[C] = accuracy(C)
    return max(sorted(scores), key=scores.get)


def test_linear_probe_chooses_C_on_validation_and_refits_on_train_and_validation():
    train, validation, test = synthetic(1, 150, 2.0), synthetic(2, 90, 2.0), synthetic(3, 90, 2.0)
    grid, refine = (1e-3, 1e-1, 1e1, 1e3), 2
    probe = LinearProbeClassifier(train, test, tuning_embeddings=validation, C_search=grid, C_refine=refine)
    expected = reference_C_choice(train, validation, grid, refine)
    assert probe.chosen["C"] == pytest.approx(expected)
    assert f"C = {expected:.3g}, chosen on the validation split" in " ".join(probe.notes)
    from sklearn.linear_model import LogisticRegression

    both = np.concatenate([train.images, validation.images])
    both = both / np.linalg.norm(both, axis=1, keepdims=True)
    refit = LogisticRegression(C=expected, random_state=0).fit(both, np.concatenate([train.labels, validation.labels]))
    unit_test = test.images / np.linalg.norm(test.images, axis=1, keepdims=True)
    assert probe.evaluate() == pytest.approx((refit.predict(unit_test) == test.labels).mean(), abs=1.5 / 90)


def test_the_search_grid_is_declared_once():
    params = LinearProbeClassifier.get_default_params()
    assert min(params["C_search"]) == 1e-6 and max(params["C_search"]) == 1e6 and len(params["C_search"]) == 13


def test_run_evaluation_scores_the_test_split_and_names_the_build_command(cache_path):
    pair, untested = EmbeddingDefinition(model="m", dataset="shapes"), EmbeddingDefinition(model="n", dataset="shapes")
    for definition in (pair, untested):
        for seed, split in enumerate((Split.TRAIN, Split.VALIDATION, Split.TEST)):
            if definition == untested and split == Split.TEST:
                continue
            size = 100 if split == Split.TRAIN else 60 + 10 * seed  # test is larger than validation
            metadata = {"class_names": NAMES, "fingerprint": {"split": split.value, "images": seed}}
            save_embeddings(definition, synthetic(seed, size, 1.5), split, metadata)
    evaluators = [WeightedKNNClassifier, ZeroShotClassifier, LinearProbeClassifier, I2IRetrievalEvaluator]
    run = run_evaluation(evaluators, [pair, untested], split=Split.TEST, n_resamples=50)
    assert run.problems == [
        "n/shapes has no test embeddings; run `tti-eval build --model-dataset n/shapes --split test` first."
    ]
    assert {r.split for r in run.results} == {"test"} and {
        r.n_scored for r in run.results if r.evaluator != "I2IR"
    } == {80}
    (probe,) = [r for r in run.results if r.evaluator == "linear_probe"]
    assert "C" in probe.chosen and "chosen on the validation split" in probe.note
    assert set(probe.fingerprints) == {"train", "validation", "test"} and probe.fingerprints["test"]["images"] == 2
    (retrieval,) = [r for r in run.results if r.evaluator == "I2IR"]
    assert len(retrieval.per_query_scores) == 100  # train queries search the test images


def test_evaluation_records_round_trip_and_keep_everything(cache_path):
    results = [*evaluated("sharp", 0.6), *evaluated("blurred", 2.5)]
    saved = EvaluationFile.model_validate_json(evaluation_file(results, n_resamples=1000, seed=0).model_dump_json())
    assert saved.seed == 0 and saved.n_resamples == 1000 and {"numpy", "tti-eval"} <= set(saved.versions)
    record = saved.results[0]
    assert record.parameters == {"k": 11} and record.metrics["accuracy"].label == "Accuracy"
    assert record.n_train == 120 and record.n_scored == 80 and record.class_names == NAMES
    back = [from_record(r) for r in saved.results]
    assert [to_record(r) for r in back] == saved.results
    assert compare_results(back, n_resamples=100).groups == compare_results(results, n_resamples=100).groups
