"""The offline demo pair: the `digits` dataset, and `digits-clip` (trained here) against `digits-clip-random`."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from tti_eval.common import Embeddings, Split
from tti_eval.common.errors import DefinitionError
from tti_eval.compute import compute_embeddings
from tti_eval.dataset import DatasetProvider
from tti_eval.dataset.types.digits import DIGIT_CLASS_NAMES, DigitsDataset, digits_split_indices
from tti_eval.evaluation import (
    I2IRetrievalEvaluator,
    LinearProbeClassifier,
    WeightedKNNClassifier,
    ZeroShotClassifier,
)
from tti_eval.model import ModelProvider
from tti_eval.model.types import digits_clip
from tti_eval.model.types.digits_clip import DigitsCLIPModel, stored_training_record, train_digits_clip

EVALUATORS = (WeightedKNNClassifier, ZeroShotClassifier, I2IRetrievalEvaluator, LinearProbeClassifier)


@pytest.fixture(scope="session")
def demo_models() -> dict[str, DigitsCLIPModel]:
    """Both demo models, loaded by title from the session cache: `digits-clip` is trained once per test session."""
    return {title: ModelProvider.get_model(title) for title in ("digits-clip", "digits-clip-random")}


@pytest.fixture(scope="session")
def demo_embeddings(demo_models: dict[str, DigitsCLIPModel]) -> dict[str, dict[Split, Embeddings]]:
    splits = {split: DatasetProvider.get_dataset("digits", split) for split in (Split.TRAIN, Split.VALIDATION)}
    return {
        title: {split: compute_embeddings(model, dataset, num_workers=0) for split, dataset in splits.items()}
        for title, model in demo_models.items()
    }


def _state_dict(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


# -- the dataset -------------------------------------------------------------------------------------------------------


def test_splits_are_disjoint_stratified_and_reproducible():
    labels = load_digits().target
    parts = {split: digits_split_indices(labels, split) for split in (Split.TRAIN, Split.VALIDATION, Split.TEST)}
    everything = np.concatenate(list(parts.values()))
    assert len(everything) == len(set(everything.tolist())) == len(labels) == 1797
    np.testing.assert_array_equal(digits_split_indices(labels, Split.ALL), np.arange(len(labels)))
    for split, fraction in ((Split.TRAIN, 0.70), (Split.VALIDATION, 0.15), (Split.TEST, 0.15)):
        np.testing.assert_array_equal(parts[split], digits_split_indices(labels, split))
        assert abs(len(parts[split]) - fraction * len(labels)) <= 1
        # Stratified: every class holds its share of the split, to within one image.
        expected = fraction * np.bincount(labels)
        assert np.abs(np.bincount(labels[parts[split]], minlength=10) - expected).max() <= 1


def test_dataset_definition_gives_real_digits_with_natural_prompts():
    sizes = {split: len(DatasetProvider.get_dataset("digits", split)) for split in Split}
    assert sizes == {Split.TRAIN: 1257, Split.VALIDATION: 270, Split.TEST: 270, Split.ALL: 1797}
    dataset = DatasetProvider.get_dataset("digits", Split.VALIDATION)
    assert isinstance(dataset, DigitsDataset)
    assert dataset.class_names == DIGIT_CLASS_NAMES == [str(d) for d in range(10)]
    assert dataset.prompts[7] == ["a photo of the handwritten digit 7", "a scan of the number 7"]

    digits = load_digits()
    index = 5
    image, label = dataset.get_image_and_label(index)
    original = digits_split_indices(digits.target, Split.VALIDATION)[index]
    assert label == digits.target[original]
    assert image.mode == "RGB" and image.size == (32, 32)
    pixels = np.asarray(image.convert("L"), dtype=np.float32)
    assert pixels[0, 0] > 200  # white paper around the digit ...
    # ... and dark ink where the scan has it: the image is the 8×8 scan, upscaled and inverted.
    small = np.asarray(image.convert("L").resize((8, 8), resample=0), dtype=np.float32)
    assert np.corrcoef(small.ravel(), -digits.images[original].ravel())[0, 1] > 0.8


# -- training ----------------------------------------------------------------------------------------------------------


def test_training_is_deterministic_and_leaves_global_state_alone(tmp_path: Path):
    dataset = DatasetProvider.get_dataset("digits", Split.VALIDATION)  # 26 images per class: 3 steps an epoch
    before = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    rng = torch.get_rng_state()
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train_digits_clip(tmp_path / f"{name}.pt", dataset, epochs=1, seed=seed)
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before
    assert torch.equal(torch.get_rng_state(), rng)

    first, again, other = (_state_dict(tmp_path / f"{name}.pt") for name in "abc")
    assert first.keys() == again.keys()
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not all(torch.equal(first[key], other[key]) for key in first)
    untrained = _state_dict(_train_untrained(tmp_path / "untrained.pt"))
    assert not torch.equal(first["text_projection"], untrained["text_projection"])  # the steps did change weights


def _train_untrained(path: Path, seed: int = 0) -> Path:
    train_digits_clip(path, None, epochs=0, seed=seed)
    return path


def test_trained_checkpoint_records_it_saw_only_the_train_split(demo_models: dict[str, DigitsCLIPModel]):
    record = stored_training_record(demo_models["digits-clip"].checkpoint_path)
    assert record is not None
    assert (record["dataset"], record["split"], record["epochs"]) == ("digits", "train", 5)
    assert record["prompts"] == DatasetProvider.get_dataset("digits", Split.TRAIN).prompts
    random_record = stored_training_record(demo_models["digits-clip-random"].checkpoint_path)
    assert random_record == {"architecture": "digits-clip", "epochs": 0, "seed": 0}


def test_checkpoint_is_reused(demo_models: dict[str, DigitsCLIPModel], monkeypatch: pytest.MonkeyPatch):
    path = demo_models["digits-clip"].checkpoint_path
    modified = path.stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("a cached checkpoint must not be retrained")

    monkeypatch.setattr(digits_clip, "train_digits_clip", no_training)
    again = ModelProvider.get_model("digits-clip")
    assert again.checkpoint_path == path and path.stat().st_mtime_ns == modified
    image, _ = DatasetProvider.get_dataset("digits", Split.TEST).get_image_and_label(0)
    pixels = again.get_image_preprocessor()([image])
    np.testing.assert_allclose(again.embed_images(pixels), demo_models["digits-clip"].embed_images(pixels), atol=1e-6)


def test_missing_checkpoint_is_created_and_announced(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING, logger="tti_eval"):
        model = ModelProvider.get_model("digits-clip-random", cache_dir=tmp_path)
    assert model.checkpoint_path == tmp_path / "checkpoint.pt" and model.checkpoint_path.is_file()
    assert "no checkpoint yet" in caplog.text and "digits-clip-random" in caplog.text
    assert not list(tmp_path.glob("*.tmp"))  # written atomically


def test_weights_named_in_the_definition_are_refused_before_training(tmp_path: Path):
    with pytest.raises(DefinitionError, match="'pretrained'"):
        ModelProvider.get_model("digits-clip-random", cache_dir=tmp_path, pretrained=str(tmp_path / "weights.pt"))
    assert not any(tmp_path.iterdir())


def test_changed_definition_retrains_but_a_foreign_checkpoint_is_kept(tmp_path: Path):
    path = _train_untrained(tmp_path / "checkpoint.pt", seed=1)
    ModelProvider.get_model("digits-clip-random", cache_dir=tmp_path)  # the definition says seed 0
    assert stored_training_record(path)["seed"] == 0

    foreign = _state_dict(_train_untrained(tmp_path / "other.pt", seed=2))
    torch.save(foreign, path)  # a plain state_dict that tti-eval did not train: used as it is
    ModelProvider.get_model("digits-clip-random", cache_dir=tmp_path)
    assert stored_training_record(path) is None
    assert torch.equal(torch.load(path, weights_only=True)["text_projection"], foreign["text_projection"])


# -- the demo's promise ------------------------------------------------------------------------------------------------


def test_trained_model_is_accurate_and_beats_random_on_every_evaluator(demo_embeddings):
    scores = {
        title: {
            evaluator.title(): evaluator(splits[Split.TRAIN], splits[Split.VALIDATION]).evaluate()
            for evaluator in EVALUATORS
        }
        for title, splits in demo_embeddings.items()
    }
    trained, random = scores["digits-clip"], scores["digits-clip-random"]
    assert trained["zero_shot"] >= 0.80, scores
    assert trained["linear_probe"] >= 0.90, scores
    for title in trained:
        assert trained[title] > random[title], scores
