import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tti_eval.common import DefinitionError, Split, UnknownTitleError
from tti_eval.common.settings import builtin_sources_path
from tti_eval.dataset import DatasetProvider
from tti_eval.model import ModelProvider
from tti_eval.schemas import render_schemas

SOURCES = builtin_sources_path()
MODEL_FILES = sorted((SOURCES / "models").glob("*.json"))
DATASET_FILES = sorted((SOURCES / "datasets").glob("*.json"))

ORIGINAL_MODELS = {
    "apple", "bioclip", "eva-clip", "vit-b-32-laion2b", "clip", "fashion", "plip", "pubmed", "rsicd",
    "siglip_large", "siglip_small", "street", "tinyclip", "rsicd-encord",
}  # fmt: skip
ORIGINAL_DATASETS = {
    "Alzheimer-MRI", "LungCancer4Types", "chest-xray-classification", "plants", "skin-cancer",
    "sports-classification", "rsicd",
}  # fmt: skip


@pytest.fixture
def team_sources(tmp_path, monkeypatch):
    """An empty team sources folder in place of the session's."""
    (tmp_path / "models").mkdir()
    (tmp_path / "datasets").mkdir()
    monkeypatch.setenv("TTI_EVAL_SOURCES_PATH", str(tmp_path))
    return tmp_path


def _write(folder: Path, name: str, content) -> Path:
    path = folder / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_builtin_sources_hold_the_original_tables_and_load_cleanly(team_sources):
    assert set(ModelProvider.list_model_titles()) >= ORIGINAL_MODELS
    assert set(DatasetProvider.list_dataset_titles()) >= ORIGINAL_DATASETS
    assert ModelProvider.registry.problems == [] and DatasetProvider.registry.problems == []


@pytest.mark.parametrize("file", MODEL_FILES + DATASET_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_source_file_validates_and_names_a_builtin_type(file, team_sources):
    registry = ModelProvider.registry if file.parent.name == "models" else DatasetProvider.registry
    spec = registry.spec(json.loads(file.read_text())["title"])
    assert spec.type_name in registry.builtin_types
    assert registry.source(spec.title) == file


def test_original_dataset_extras_reach_the_class(team_sources):
    assert DatasetProvider.registry.spec("LungCancer4Types").class_kwargs()["revision"] == (
        "a1aab924c6bed6b080fc85552fd7b39724931605"
    )
    chest = DatasetProvider.registry.spec("chest-xray-classification").class_kwargs()
    assert chest["name"] == "full" and chest["target_feature"] == "labels"
    assert ModelProvider.registry.spec("vit-b-32-laion2b").class_kwargs()["pretrained"] == "laion2b_e16"


def test_titles_are_naturally_sorted_ignoring_case(team_sources):
    for title in ["model10", "Model2", "model1"]:
        _write(team_sources / "models", f"{title}.json", {"model_type": "HFModel", "title": title})
    titles = [t for t in ModelProvider.list_model_titles() if t.lower().startswith("model")]
    assert titles == ["model1", "Model2", "model10"]


def test_schemas_are_up_to_date():
    for name, text in render_schemas().items():
        assert (SOURCES / name).read_text() == text, f"run `python -m tti_eval.schemas` to regenerate {name}"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        ({"model_type": "HFModel"}, "field 'title'"),
        ({"model_type": "HFModel", "title": "../escape"}, "field 'title'"),
        ({"model_type": "NoSuchType", "title": "x1"}, "field 'model_type'"),
        ({"model_type": "Mine", "title": "x2", "module_path": "missing.py"}, "field 'module_path'"),
        ({"model_type": "HFModel", "title": "clip"}, "already defined in"),
        ("[1, 2]", "one JSON object"),
    ],
)
def test_a_broken_file_is_reported_and_the_rest_still_load(team_sources, content, expected):
    broken = _write(team_sources / "models", "zz-broken.json", content)
    _write(team_sources / "models", "good.json", {"model_type": "HFModel", "title": "good-one"})
    problems = ModelProvider.registry.problems
    assert len(problems) == 1 and str(broken) in problems[0] and expected in problems[0]
    assert {"good-one", "clip", "apple"} <= set(ModelProvider.list_model_titles())


def test_module_path_is_relative_to_the_json_and_must_subclass_the_base(team_sources):
    (team_sources / "datasets" / "code").mkdir()
    _write(
        team_sources / "datasets" / "code",
        "mine.py",
        textwrap.dedent(
            """
            from PIL import Image
            from tti_eval.dataset.base import Dataset

            class Squares(Dataset):
                def _setup(self, size=3, **kwargs):
                    self.size = size
                    self.class_names = ["dark", "light"]

                def __len__(self):
                    return self.size

                def get_image_and_label(self, index):
                    return Image.new("RGB", (4, 4), (index * 60,) * 3), index % 2

            class NotADataset:
                pass
            """
        ),
    )
    _write(
        team_sources / "datasets",
        "sq.json",
        {"dataset_type": "Squares", "title": "sq", "module_path": "code/mine.py", "size": 4},
    )
    _write(
        team_sources / "datasets",
        "bad.json",
        {"dataset_type": "NotADataset", "title": "bad", "module_path": "code/mine.py"},
    )
    dataset = DatasetProvider.get_dataset("sq", Split.TRAIN)
    assert type(dataset).__name__ == "Squares" and len(dataset) == 4 and dataset.split is Split.TRAIN
    assert dataset[1]["label"] == 1 and dataset.prompts == [["An image of a dark"], ["An image of a light"]]
    with pytest.raises(
        DefinitionError, match=r"bad\.json.*'dataset_type'.*not a subclass of tti_eval\.dataset\.base\.Dataset"
    ):
        DatasetProvider.get_dataset("bad", Split.TRAIN)


def test_unknown_titles_suggest_close_ones(team_sources):
    with pytest.raises(UnknownTitleError, match=r"Unknown model 'siglip-large'\. Did you mean 'siglip_large'"):
        ModelProvider.get_model("siglip-large")
    with pytest.raises(UnknownTitleError, match=r"Unknown dataset 'plant'\. Did you mean 'plants'"):
        DatasetProvider.get_dataset("plant", Split.TRAIN)


def test_register_from_python(team_sources):
    from tti_eval.dataset.base import Dataset

    class Tiny(Dataset):
        def _setup(self, **kwargs):
            self.class_names = ["a"]

        def __len__(self):
            return 1

        def get_image_and_label(self, index):
            raise IndexError

    DatasetProvider.register_dataset(Tiny, "tiny-registered", templates=["a {} photo"])
    assert "tiny-registered" in DatasetProvider.list_dataset_titles()
    ds = DatasetProvider.get_dataset("tiny-registered", Split.VALIDATION)
    assert ds.split is Split.VALIDATION and ds.prompts == [["a a photo"]]
    with pytest.raises(DefinitionError, match="not a subclass of tti_eval.model.base.Model"):
        ModelProvider.register_model(Tiny, "wrong-kind")
    with pytest.raises(DefinitionError, match="field 'title'"):
        DatasetProvider.register_dataset(Tiny, "no/slashes")


def test_listing_imports_no_heavy_library(team_sources):
    code = (
        "import sys\n"
        "from tti_eval.model import ModelProvider\nfrom tti_eval.dataset import DatasetProvider\n"
        "from tti_eval.cli.main import app\n"
        "ModelProvider.list_model_titles(); DatasetProvider.list_dataset_titles()\n"
        "ModelProvider.registry.spec('clip'); DatasetProvider.registry.spec('rsicd')\n"
        "heavy = {'torch', 'transformers', 'open_clip', 'datasets', 'umap', 'encord', 'faiss', 'sklearn'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_relative_paths_resolve_against_the_definition_file(team_sources):
    _write(
        team_sources / "models",
        "local.json",
        {
            "model_type": "LocalCLIPModel",
            "title": "local-one",
            "title_in_source": "ViT-B-32",
            "checkpoint_path": "./weights/ckpt.pt",
            "cache_dir": "../model-cache",
            "pretrained": "laion2b_e16",
        },
    )
    kwargs = ModelProvider.registry.spec("local-one").class_kwargs()
    assert kwargs["checkpoint_path"] == str((team_sources / "models" / "weights" / "ckpt.pt").resolve())
    assert Path(kwargs["cache_dir"]) == (team_sources / "model-cache").resolve()
    assert kwargs["title_in_source"] == "ViT-B-32" and kwargs["pretrained"] == "laion2b_e16"  # not paths: untouched
