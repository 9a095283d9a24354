"""Every built-in model type, loaded by title from its tiny offline counterpart through the real libraries."""

import json
import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.fixtures.models import TINY_CONTEXT_LENGTH, TINY_OPENCLIP_ARCHITECTURE, TinyModel
from tti_eval.common.errors import TTIEvalError
from tti_eval.common.settings import builtin_sources_path
from tti_eval.model import Model, ModelProvider
from tti_eval.model.spec import BUILTIN_MODEL_TYPES
from tti_eval.model.types.hugging_face import HFModel
from tti_eval.model.types.open_clip_model import LocalCLIPModel, OpenCLIPModel

TINY_TITLES = ["tiny-openclip", "tiny-local-clip", "tiny-hf-clip", "tiny-siglip"]
TESTED_ELSEWHERE = {"DigitsCLIPModel"}  # trains its own weights; its tests cover it
PROMPTS = ["An image of a zero", "An image of a seven", "a blurry picture of a handwritten nine"]
BUILTIN_MODEL_JSONS = sorted((builtin_sources_path() / "models").glob("*.json"))
OPEN_CLIP_CONFIGS = sorted((Path(__file__).parent.parent / "tti_eval/model/open_clip_configs").glob("*.json"))


@pytest.fixture(scope="module")
def digit_images() -> list[Image.Image]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return [Image.fromarray((digits.images[i] * 255 / 16).astype(np.uint8)).convert("RGB") for i in range(6)]


@pytest.fixture(scope="module")
def load(tiny_models: dict[str, TinyModel]) -> Callable[[str], Model]:
    """Loads each tiny model once per module."""
    loaded: dict[str, Model] = {}

    def _load(title: str) -> Model:
        if title not in loaded:
            loaded[title] = ModelProvider.get_model(title)
        return loaded[title]

    return _load


def test_every_builtin_model_type_has_a_tiny_counterpart(tiny_models: dict[str, TinyModel]) -> None:
    assert set(tiny_models) == set(TINY_TITLES)
    covered = {model.definition["model_type"] for model in tiny_models.values()}
    assert covered | TESTED_ELSEWHERE == set(BUILTIN_MODEL_TYPES)


def test_fixtures_load_through_the_libraries(tiny_models: dict[str, TinyModel]) -> None:
    import open_clip
    from transformers import AutoTokenizer, CLIPModel, SiglipModel

    model, _, transform = open_clip.create_model_and_transforms(f"local-dir:{tiny_models['tiny-openclip'].path}")
    assert model.encode_image(transform(Image.new("RGB", (8, 8))).unsqueeze(0)).shape == (1, 16)
    local = tiny_models["tiny-local-clip"].definition
    open_clip.add_model_config(local["model_config_path"])
    open_clip.create_model_and_transforms(TINY_OPENCLIP_ARCHITECTURE, pretrained=local["checkpoint_path"])
    for title, model_class in [("tiny-hf-clip", CLIPModel), ("tiny-siglip", SiglipModel)]:
        path = tiny_models[title].path
        model, tokenizer = model_class.from_pretrained(path), AutoTokenizer.from_pretrained(path)
        assert len(tokenizer) == model.config.text_config.vocab_size
        assert tokenizer.unk_token not in tokenizer.tokenize("An image of a seven")


@pytest.mark.parametrize("title", TINY_TITLES)
def test_embeddings_are_unit_float32_and_deterministic(
    load: Callable[[str], Model], tiny_models: dict[str, TinyModel], digit_images: list[Image.Image], title: str
) -> None:
    model = load(title)
    assert next(model.model.parameters()).device == model.device
    pixel_values = model.get_image_preprocessor()(digit_images)
    input_type = torch.uint8 if isinstance(model, OpenCLIPModel) else torch.float32  # OpenCLIP: expanded by embed
    assert pixel_values.shape[0] == len(digit_images) and pixel_values.dtype == input_type
    dim = tiny_models[title].embed_dim
    for embed, inputs, count in [
        (model.embed_images, pixel_values, len(digit_images)),
        (model.embed_texts, PROMPTS, 3),
    ]:
        first, second = embed(inputs), embed(inputs)
        assert first.shape == (count, dim) and first.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(first, second)
        assert not np.allclose(first[0], first[1], atol=1e-4)  # different inputs, different vectors


@pytest.mark.parametrize("title", TINY_TITLES)
def test_preprocessor_pickles_without_weights(
    load: Callable[[str], Model], digit_images: list[Image.Image], title: str
) -> None:
    model = load(title)
    preprocess = model.get_image_preprocessor()
    blob = pickle.dumps(preprocess)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.model.parameters())
    assert len(blob) < 16_000 < weight_bytes
    torch.testing.assert_close(pickle.loads(blob)(digit_images), preprocess(digit_images))
    collated = pickle.loads(pickle.dumps(model.get_collate_fn()))([{"image": digit_images[0], "label": 3}])
    assert collated["labels"].tolist() == [3]


@pytest.mark.parametrize("title, pads_to_max_length", [("tiny-siglip", True), ("tiny-hf-clip", False)])
def test_text_padding_follows_the_model_family(
    load: Callable[[str], Model], title: str, pads_to_max_length: bool
) -> None:
    model = load(title)
    input_ids = model.tokenize(["a", "An image of a seven"])["input_ids"]
    longest = len(model.tokenizer("An image of a seven")["input_ids"])
    assert longest < TINY_CONTEXT_LENGTH
    assert input_ids.shape[1] == (TINY_CONTEXT_LENGTH if pads_to_max_length else longest)
    assert model.tokenize(["seven " * 40])["input_ids"].shape[1] == TINY_CONTEXT_LENGTH  # truncated, never longer


def _state_dict_wrapped_in_module_prefix(checkpoint: Path, target: Path) -> Path:
    state_dict = torch.load(checkpoint, weights_only=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in state_dict.items()}, "epoch": 3}, target)
    return target


@pytest.mark.parametrize("route", ["local-dir", "pretrained-file", "wrapped-checkpoint"])
def test_every_openclip_route_loads_the_same_weights(
    load: Callable[[str], Model], tiny_models: dict[str, TinyModel], tmp_path: Path, route: str
) -> None:
    """tiny-local-clip is the reference: a plain state_dict through LocalCLIPModel."""
    local = tiny_models["tiny-local-clip"].definition
    fields = {"title_in_source": TINY_OPENCLIP_ARCHITECTURE, "model_config_path": local["model_config_path"]}
    if route == "local-dir":
        model = load("tiny-openclip")
    elif route == "pretrained-file":
        ModelProvider.register_model(OpenCLIPModel, "tiny-openclip-file", pretrained=local["checkpoint_path"], **fields)
        model = ModelProvider.get_model("tiny-openclip-file")
    else:
        wrapped = _state_dict_wrapped_in_module_prefix(Path(local["checkpoint_path"]), tmp_path / "wrapped.pt")
        ModelProvider.register_model(LocalCLIPModel, "tiny-local-clip-wrapped", checkpoint_path=str(wrapped), **fields)
        model = ModelProvider.get_model("tiny-local-clip-wrapped")
    np.testing.assert_allclose(model.embed_texts(PROMPTS), load("tiny-local-clip").embed_texts(PROMPTS), atol=1e-6)


def test_local_clip_reads_its_checkpoint_from_the_model_cache(
    tiny_models: dict[str, TinyModel], cache_path: Path
) -> None:
    local = tiny_models["tiny-local-clip"].definition
    ModelProvider.register_model(
        LocalCLIPModel,
        "tiny-local-clip-cached",
        title_in_source=TINY_OPENCLIP_ARCHITECTURE,
        model_config_path=local["model_config_path"],
    )
    expected = cache_path / "models" / "tiny-local-clip-cached" / "checkpoint.pt"
    with pytest.raises(TTIEvalError, match="checkpoint_path") as error:
        ModelProvider.get_model("tiny-local-clip-cached")
    assert str(expected) in str(error.value)
    expected.parent.mkdir(parents=True)
    shutil.copy(local["checkpoint_path"], expected)
    model = ModelProvider.get_model("tiny-local-clip-cached")
    assert model.checkpoint_path == expected
    assert model.embed_texts(["a"]).shape == (1, 16)


def test_trust_remote_code_only_when_the_definition_opts_in(
    tiny_models: dict[str, TinyModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tti_eval.model.types import hugging_face

    seen: dict[str, set[bool]] = {}
    for auto_class in (hugging_face.AutoModel, hugging_face.AutoProcessor, hugging_face.AutoTokenizer):

        def spy(*args, _real=auto_class.from_pretrained, _name=auto_class.__name__, **kwargs):
            seen.setdefault(_name, set()).add(kwargs["trust_remote_code"])
            return _real(*args, **kwargs)

        monkeypatch.setattr(auto_class, "from_pretrained", spy)
    ModelProvider.get_model("tiny-hf-clip")
    assert seen == {"AutoModel": {False}, "AutoProcessor": {False}, "AutoTokenizer": {False}}
    seen.clear()
    ModelProvider.get_model("tiny-hf-clip", trust_remote_code=True)
    assert seen == {"AutoModel": {True}, "AutoProcessor": {True}, "AutoTokenizer": {True}}


def test_definitions_load_in_a_fresh_process(tiny_models: dict[str, TinyModel], tmp_path: Path) -> None:
    """A CLI subprocess sees only the JSON files and the environment, not this session's open_clip registrations."""
    code = (
        "from tti_eval.model import ModelProvider\n"
        f"for title in {TINY_TITLES!r}:\n"
        "    print(title, ModelProvider.get_model(title).embed_texts(['An image of a seven']).shape[1])\n"
    )
    assert os.environ["TTI_EVAL_SOURCES_PATH"]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=os.environ, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[:-1] == [f"{title} {tiny_models[title].embed_dim}" for title in TINY_TITLES]


BROKEN_DEFINITIONS = {
    "missing-checkpoint": (LocalCLIPModel, {"checkpoint_path": "{tmp}/missing.pt"}, "{tmp}/missing.pt"),
    "local-clip-pretrained": (LocalCLIPModel, {"pretrained": "{tmp}/x.pt"}, "checkpoint_path, not pretrained"),
    "missing-model-config": (OpenCLIPModel, {"model_config_path": "{tmp}/arch.json"}, "{tmp}/arch.json"),
    "missing-local-dir": (OpenCLIPModel, {"title_in_source": "local-dir:{tmp}/none"}, "{tmp}/none"),
    "unknown-architecture": (OpenCLIPModel, {"title_in_source": "ViT-B-322"}, "Did you mean 'ViT-B-32'"),
    "bad-pretrained-tag": (OpenCLIPModel, {"title_in_source": "ViT-B-32", "pretrained": "laion9"}, "laion2b_e16"),
    "offline-openclip-hub": (OpenCLIPModel, {"title_in_source": "hf-hub:tti-eval-nobody/none"}, "HF_HUB_OFFLINE"),
    "missing-hf-dir": (HFModel, {"title_in_source": "{tmp}/no-such-dir"}, "{tmp}/no-such-dir"),
    "offline-hub-name": (HFModel, {"title_in_source": "tti-eval-nobody/no-such-model"}, "HF_HUB_OFFLINE"),
}


@pytest.mark.parametrize("case", list(BROKEN_DEFINITIONS))
def test_user_errors_are_one_sentence(tiny_models: dict[str, TinyModel], tmp_path: Path, case: str) -> None:
    model_class, fields, expected = BROKEN_DEFINITIONS[case]
    if issubclass(model_class, OpenCLIPModel):  # every other field valid: the tiny architecture and its checkpoint
        local = tiny_models["tiny-local-clip"].definition
        valid = {"title_in_source": TINY_OPENCLIP_ARCHITECTURE, "model_config_path": local["model_config_path"]}
        if model_class is LocalCLIPModel:
            valid["checkpoint_path"] = local["checkpoint_path"]
        fields = valid | fields
    title = f"broken-{case}"
    with pytest.raises(TTIEvalError) as error:  # refused when registered (a field its type rejects) or when loaded
        ModelProvider.register_model(model_class, title, **{k: v.format(tmp=tmp_path) for k, v in fields.items()})
        ModelProvider.get_model(title)
    message = str(error.value)
    assert expected.format(tmp=tmp_path) in message
    assert title in message and "\n" not in message and message.endswith(".")
    assert error.value.__cause__ is None and (error.value.__context__ is None or error.value.__suppress_context__)


@pytest.mark.parametrize("path", BUILTIN_MODEL_JSONS, ids=lambda path: path.stem)
def test_builtin_definition_maps_to_a_model_class(path: Path) -> None:
    """Resolves the class of every shipped definition without instantiating it (that would need the hub)."""
    title = json.loads(path.read_text())["title"]
    assert ModelProvider.registry.source(title).resolve() == path.resolve()
    model_class = ModelProvider.registry.get_class(title)
    assert issubclass(model_class, Model) and model_class.__name__ == ModelProvider.registry.spec(title).type_name


@pytest.mark.parametrize("path", OPEN_CLIP_CONFIGS, ids=lambda path: path.stem)
def test_shipped_architectures_are_registered_with_open_clip(path: Path) -> None:
    import open_clip

    import tti_eval.model.types.open_clip_model  # noqa: F401  (registers the folder on import)

    assert path.stem in open_clip.list_models()
