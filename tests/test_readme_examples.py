"""The README's "Write your own model or dataset class" example, run as a user would: its class saved as a module
next to its JSON definition in a team sources folder, loaded by title through `DatasetProvider`."""

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from tti_eval.common import Split
from tti_eval.dataset import DatasetProvider

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "### Write your own model or dataset class"


def _blocks(language: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    assert SECTION in text, f"README lost its section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    return re.findall(rf"^```{language}\n(.*?)^```$", section, flags=re.S | re.M)


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """The photo folder the example's CSV describes: five images of two classes; validation holds only mugs."""
    root = tmp_path / "shop"
    (root / "images").mkdir(parents=True)
    rows = [("a.png", "mug", "train"), ("b.png", "lamp", "train"), ("c.png", "mug", "train")]
    rows += [("d.png", "mug", "validation"), ("e.png", "mug", "validation")]
    for index, (name, _, _) in enumerate(rows):
        Image.new("L", (6, 4), index * 50).save(root / "images" / name)
    lines = ["file,label,split", *(f"images/{name},{label},{split}" for name, label, split in rows)]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def test_readme_dataset_class_loads_from_its_definition(tmp_path, monkeypatch, shop):
    (code,) = _blocks("python")
    (definition_text,) = _blocks("json")
    sources = tmp_path / "my_sources"
    (sources / "models").mkdir(parents=True)
    (sources / "datasets" / "code").mkdir(parents=True)
    definition = json.loads(definition_text)
    (sources / "datasets" / definition["module_path"]).write_text(code)
    definition["title_in_source"] = str(shop)
    (sources / "datasets" / f"{definition['title']}.json").write_text(json.dumps(definition))
    monkeypatch.setenv("TTI_EVAL_SOURCES_PATH", str(sources))

    train = DatasetProvider.get_dataset(definition["title"], Split.TRAIN)
    assert type(train).__name__ == definition["dataset_type"]
    assert train.class_names == ["lamp", "mug"] and len(train) == 3
    assert [train[i]["label"] for i in range(3)] == [1, 0, 1]
    image = train[1]["image"]
    assert image.mode == "RGB" and image.size == (6, 4) and image.getpixel((0, 0)) == (50, 50, 50)
    assert train.prompts == [["An image of a lamp"], ["An image of a mug"]]
    assert train.source_paths() == [shop]

    validation = DatasetProvider.get_dataset(definition["title"], Split.VALIDATION)
    assert validation.class_names == train.class_names  # a split lacking a class keeps the same class indices
    assert len(validation) == 2 and [validation[i]["label"] for i in range(2)] == [1, 1]
    assert validation[0]["image"].getpixel((0, 0)) == (150, 150, 150)
    assert len(DatasetProvider.get_dataset(definition["title"], Split.ALL)) == 5
