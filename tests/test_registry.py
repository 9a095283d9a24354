import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tti_eval.common import DefinitionError, Split, UnknownTitleError
from tti_eval.common.settings import builtin_sources_path
from tti_eval.common.title_registry import natural_key
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


def test_natural_key_orders_numbers_by_value_and_ignores_case():
    expected = [
        "",
        "2",
        "10",
        "a",
        "A1",
        "a1b",
        "a1B2",
        "a2",
        "clip-2",
        "CLIP-10",
        "clip-10-b",
        "ß",
        "Straße2",
        "x٣",
        "x12",
    ]
    shuffled = expected[::2] + expected[1::2]
    assert sorted(shuffled, key=natural_key) == expected
    assert natural_key("v01") == natural_key("V1")  # equal values: only input order tells them apart


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
        },
    )
    _write(
        team_sources / "models",
        "tagged.json",
        {"model_type": "OpenCLIPModel", "title": "tagged", "title_in_source": "ViT-B-32", "pretrained": "laion2b_e16"},
    )
    kwargs = ModelProvider.registry.spec("local-one").class_kwargs()
    assert Path(kwargs["checkpoint_path"]) == (team_sources / "models" / "weights" / "ckpt.pt").resolve()
    assert Path(kwargs["cache_dir"]) == (team_sources / "model-cache").resolve()
    tagged = ModelProvider.registry.spec("tagged").class_kwargs()
    assert tagged["title_in_source"] == "ViT-B-32" and tagged["pretrained"] == "laion2b_e16"  # not paths: untouched


# -- definitions checked when they load --------------------------------------------------------------------------------

DIGITS_CLIP = {"model_type": "DigitsCLIPModel", "title": "my-digits-clip", "title_in_source": "digits-clip"}
DIGITS = {"dataset_type": "DigitsDataset", "title": "my-digits"}


@pytest.mark.parametrize(
    ("kind", "content", "expected"),
    [
        ("models", DIGITS_CLIP | {"epochs": -1}, "field 'epochs': Input should be greater than or equal to 0"),
        ("models", DIGITS_CLIP | {"epochs": "five"}, "field 'epochs': Input should be a valid integer"),
        ("models", DIGITS_CLIP | {"epochz": 3}, "field 'epochz' is not one that DigitsCLIPModel accepts"),
        (
            "models",
            DIGITS_CLIP | {"training_dataset": "digitz"},
            "'digitz' is not a known dataset; name one that `tti-eval list --all` shows. Did you mean 'digits'",
        ),
        ("models", DIGITS_CLIP | {"seed": 1.5}, "field 'seed'"),
        ("models", {"model_type": "HFModel", "title": "x", "trust_remote_code": "yes"}, "field 'trust_remote_code'"),
        ("models", {"model_type": "LocalCLIPModel", "title": "x", "pretrained": "a.pt"}, "not pretrained"),
        ("models", {"model_type": "HFModel", "title": "a" * 240}, "field 'title': the title is 240 characters long"),
        ("models", {"model_type": "HFModel", "title": "nul"}, "field 'title': 'nul' cannot be a file name"),
        ("datasets", DIGITS | {"templates": ["a photo of {} in {place}"]}, "field 'templates'"),
        ("datasets", DIGITS | {"templates": ["a {} photo }"]}, "field 'templates'"),
        ("datasets", DIGITS | {"templates": ["a {} photo {0}"]}, "no other '{...}' field"),
        ("datasets", DIGITS | {"templates": ["a {!r} photo"]}, "field 'templates'"),
        ("datasets", DIGITS | {"image_size": 0}, "field 'image_size'"),
        ("datasets", DIGITS | {"revision": "main"}, "field 'revision' is not one that DigitsDataset accepts"),
        ("datasets", {"dataset_type": "EncordDataset", "title": "e", "project_hash": "a b"}, "field 'project_hash'"),
        ("datasets", {"dataset_type": "EncordDataset", "title": "e", "project_hash": "ab"}, "classification_hash"),
        ("datasets", {"dataset_type": "HFDataset", "title": "h", "revison": "main"}, "field 'revison'"),
    ],
)
def test_type_fields_are_checked_when_the_file_is_read(team_sources, kind, content, expected):
    broken = _write(team_sources / kind, "zz-broken.json", content)
    registry = ModelProvider.registry if kind == "models" else DatasetProvider.registry
    problems = registry.problems
    assert len(problems) == 1 and problems[0].startswith(f"{broken}: ") and expected in problems[0], problems
    assert "\n" not in problems[0] and content["title"] not in registry.titles()
    assert {"clip", "digits-clip"} <= set(ModelProvider.list_model_titles())  # the others still load


@pytest.mark.parametrize("template", ["An image of a {}", "{}", "a {{literal}} {} photo", "{} , {{}}"])
def test_templates_with_one_placeholder_load_and_format(team_sources, template):
    _write(team_sources / "datasets", "t.json", DIGITS | {"templates": [template]})
    assert DatasetProvider.registry.problems == []
    assert DatasetProvider.registry.spec("my-digits").templates[0].format("cat") == template.format("cat")


def test_list_all_shows_each_broken_file_with_its_field(team_sources):
    from typer.testing import CliRunner

    from tti_eval.cli.main import app

    _write(team_sources / "models", "epochs.json", DIGITS_CLIP | {"epochs": "five"})
    _write(team_sources / "datasets", "templates.json", DIGITS | {"templates": ["a {} in {place}"]})
    result = CliRunner().invoke(app, ["list", "--all"], terminal_width=400)
    assert result.exit_code == 0
    output = " ".join(result.output.split())
    assert "epochs.json: field 'epochs'" in output and "templates.json: field 'templates'" in output
    assert "digits-clip" in output and "plants" in output


def test_a_type_from_a_module_that_exits_or_raises_at_import_is_a_definition_problem(team_sources):
    code = team_sources / "models" / "code"
    code.mkdir()
    (code / "exits.py").write_text("import sys\nsys.exit(0)\n")
    (code / "raises.py").write_text("raise RuntimeError('no GPU here')\n")
    for name in ("exits", "raises"):
        _write(
            team_sources / "models",
            f"{name}.json",
            {"model_type": "M", "title": name, "module_path": f"code/{name}.py"},
        )
    with pytest.raises(DefinitionError, match=r"exits\.json: field 'module_path': .*sys\.exit\(0\)"):
        ModelProvider.get_model("exits")
    with pytest.raises(DefinitionError, match=r"raises\.json: field 'module_path': .*RuntimeError: no GPU here"):
        ModelProvider.registry.check("raises")


def test_a_build_of_a_model_whose_module_exits_fails_instead_of_ending_the_process(team_sources, cache_path):
    code = team_sources / "models" / "exits.py"
    code.write_text("import sys\nsys.exit(0)\n")
    _write(team_sources / "models", "exits.json", {"model_type": "M", "title": "exits", "module_path": "exits.py"})
    command = "from tti_eval.cli.main import cli; cli()"
    result = subprocess.run(
        [sys.executable, "-c", command, "build", "-md", "exits/digits", "--num-workers", "0"],
        capture_output=True,
        text=True,
    )
    assert (
        result.returncode == 1 and "sys.exit(0)" in result.stderr and "Traceback" not in result.stdout + result.stderr
    )


def test_sources_path_may_name_several_folders_read_in_order(tmp_path, monkeypatch):
    first, second, missing, a_file = tmp_path / "a", tmp_path / "b", tmp_path / "gone", tmp_path / "f.json"
    for folder, title in ((first, "first-clip"), (second, "second-clip")):
        (folder / "models").mkdir(parents=True)
        _write(folder / "models", "m.json", {"model_type": "HFModel", "title": title})
        _write(folder / "models", "same.json", {"model_type": "HFModel", "title": "same-title"})
    a_file.write_text("{}")
    import os

    monkeypatch.setenv("TTI_EVAL_SOURCES_PATH", os.pathsep.join(map(str, [first, missing, second, a_file])))
    titles = ModelProvider.list_model_titles()
    assert {"first-clip", "second-clip", "same-title", "clip"} <= set(titles)
    assert ModelProvider.registry.source("same-title") == first / "models" / "same.json"  # the first folder wins
    problems = ModelProvider.registry.problems
    assert any(p.startswith(str(second / "models" / "same.json")) and str(first) in p for p in problems)
    assert f"TTI_EVAL_SOURCES_PATH names {missing}, which does not exist; fix or remove it." in problems
    assert any(p.startswith(f"TTI_EVAL_SOURCES_PATH names {a_file}, which is a file") for p in problems)
    assert len(problems) == 3


@pytest.mark.parametrize("file", MODEL_FILES + DATASET_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_source_file_passes_its_types_offline_check(file, team_sources):
    registry = ModelProvider.registry if file.parent.name == "models" else DatasetProvider.registry
    registry.check(json.loads(file.read_text())["title"])


def _model(model_type: str, **fields) -> tuple[str, dict]:
    return "models", {"model_type": model_type, "title": "x", **fields}


def _dataset(dataset_type: str, **fields) -> tuple[str, dict]:
    return "datasets", {"dataset_type": dataset_type, "title": "x", **fields}


@pytest.mark.parametrize(
    ("definition", "expected"),
    [
        (_model("OpenCLIPModel", title_in_source="BAAI/EVA-CLIP-8B-448"), "no architecture 'BAAI/EVA-CLIP-8B-448'"),
        (_model("OpenCLIPModel", title_in_source="ViT-B-32", pretrained="laion9"), "field 'pretrained'"),
        (_model("OpenCLIPModel", title_in_source="local-dir:/no/such"), "field 'title_in_source'"),
        (_model("LocalCLIPModel", title_in_source="ViT-B-32", checkpoint_path="/no/c.pt"), "field 'checkpoint_path'"),
        (_model("DigitsCLIPModel", title_in_source="ViT-B-99"), "no architecture 'ViT-B-99'"),
        (_model("HFModel", title_in_source="/no/such/dir"), "field 'title_in_source'"),
        (_dataset("HFDataset", title_in_source="/no/such/dir"), "/no/such/dir does not exist"),
        (_dataset("ImageFolderDataset", title_in_source="/no/such/dir"), "field 'title_in_source'"),
        (
            _dataset("EncordDataset", project_hash="p", classification_hash="c", ssh_key_path="/k"),
            "field 'ssh_key_path'",
        ),
    ],
)
def test_offline_checks_name_the_file_and_field(team_sources, definition, expected):
    kind, content = definition
    file = _write(team_sources / kind, "x.json", content)
    registry = ModelProvider.registry if kind == "models" else DatasetProvider.registry
    assert registry.problems == []  # well-formed: only the check can tell
    with pytest.raises(DefinitionError) as error:
        registry.check("x")
    assert str(error.value).startswith(f"{file}: ") and expected in str(error.value)


def test_every_builtin_type_has_an_offline_check():
    from tti_eval.common.registry import TypeSpec

    for spec in [*ModelProvider.registry.builtin_types.values(), *DatasetProvider.registry.builtin_types.values()]:
        assert issubclass(spec, TypeSpec) and spec.offline_check is not TypeSpec.offline_check, spec
