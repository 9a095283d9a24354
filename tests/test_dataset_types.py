"""The folder-backed dataset types (HFDataset through the real `datasets` library, ImageFolderDataset) on the on-disk
digits tree, the split-carving rule, the built-in definitions in `sources/datasets/`, and user-caused errors."""

import hashlib
import json
import pickle
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from tests.fixtures.datasets import DIGIT_FOLDER_NAMES, DigitsTree, write_digits_tree
from tti_eval.common.base import Split
from tti_eval.common.errors import DefinitionError, TTIEvalError
from tti_eval.common.settings import builtin_sources_path
from tti_eval.dataset import DatasetDefinitionSpec, DatasetProvider
from tti_eval.dataset.base import Dataset
from tti_eval.dataset.spec import BUILTIN_DATASET_TYPES
from tti_eval.dataset.splits import carve_missing_splits
from tti_eval.dataset.types.hugging_face import HFDataset
from tti_eval.dataset.types.image_folder import ImageFolderDataset

FOLDER_TYPES = [HFDataset, ImageFolderDataset]  # every built-in type that reads a local image tree offline


def pixel_key(image: Image.Image) -> str:
    return hashlib.sha1(np.asarray(image.convert("RGB")).tobytes()).hexdigest()


def tree_items(folder: Path) -> list[tuple[str, str]]:
    """(pixel hash, class folder name) of every image under `folder/<class>/`, read with PIL alone."""
    return sorted((pixel_key(Image.open(file)), file.parent.name) for file in folder.glob("*/*.png"))


def dataset_items(dataset: Dataset) -> list[tuple[str, str]]:
    return sorted(
        (pixel_key(image), dataset.class_names[label])
        for image, label in (dataset.get_image_and_label(i) for i in range(len(dataset)))
    )


@pytest.fixture(scope="module", params=FOLDER_TYPES, ids=lambda cls: cls.__name__)
def digits_splits(request: pytest.FixtureRequest, digits_tree: DigitsTree) -> dict[Split, Dataset]:
    """Every split of the digits tree, loaded once per type through the provider, as users load it."""
    title = digits_tree.titles[request.param.__name__]
    loaded = {split: DatasetProvider.get_dataset(title, split) for split in Split}
    assert all(type(dataset) is request.param for dataset in loaded.values())
    return loaded


# -- the digits tree, through every folder type ------------------------------------------------------------------------


def test_split_sizes_and_class_names(digits_splits: dict[Split, Dataset], digits_tree: DigitsTree) -> None:
    for split, dataset in digits_splits.items():
        expected = sum(digits_tree.sizes.values()) if split is Split.ALL else digits_tree.sizes[split.value]
        assert len(dataset) == expected, split
        assert dataset.class_names == DIGIT_FOLDER_NAMES
        assert dataset.num_classes == 10
        assert dataset.split is split


def test_items_are_the_tree_images_with_their_folder_class(
    digits_splits: dict[Split, Dataset], digits_tree: DigitsTree
) -> None:
    for split in (Split.VALIDATION, Split.TEST):
        assert dataset_items(digits_splits[split]) == tree_items(digits_tree.root / split.value)


def test_items_are_rgb_images_and_int_labels_in_range(digits_splits: dict[Split, Dataset]) -> None:
    train = digits_splits[Split.TRAIN]
    labels = []
    for index in range(len(train)):
        item = train[index]
        assert isinstance(item["image"], Image.Image)
        assert item["image"].mode == "RGB"
        assert item["image"].size == (32, 32)
        assert type(item["label"]) is int
        labels.append(item["label"])
    assert Counter(labels) == dict.fromkeys(range(10), 20)


def test_custom_templates_make_the_prompts(digits_tree: DigitsTree) -> None:
    for title in digits_tree.titles.values():
        dataset = DatasetProvider.get_dataset(title, Split.VALIDATION, templates=["a photo of {}", "{}, handwritten"])
        assert len(dataset.prompts) == 10
        assert dataset.prompts[3] == ["a photo of digit 3", "digit 3, handwritten"]


def test_default_prompt_is_the_original_tools(digits_splits: dict[Split, Dataset]) -> None:
    assert digits_splits[Split.TEST].prompts[0] == ["An image of a digit 0"]


def test_set_transform_applies_to_items(digits_splits: dict[Split, Dataset]) -> None:
    dataset = digits_splits[Split.TEST]
    dataset.set_transform(lambda image: np.asarray(image).shape)
    try:
        assert dataset[0]["image"] == (32, 32, 3)
    finally:
        dataset.set_transform(None)
    assert isinstance(dataset[0]["image"], Image.Image)


def test_pickles_for_dataloader_workers(digits_splits: dict[Split, Dataset]) -> None:
    dataset = digits_splits[Split.VALIDATION]
    clone = pickle.loads(pickle.dumps(dataset))
    for index in (0, len(dataset) - 1):
        assert pixel_key(clone[index]["image"]) == pixel_key(dataset[index]["image"])
        assert clone[index]["label"] == dataset[index]["label"]


def test_definitions_load_in_a_subprocess_without_the_encord_sdk(digits_tree: DigitsTree) -> None:
    # A fresh interpreter finds the definitions through TTI_EVAL_SOURCES_PATH, as a CLI run would; loading the folder
    # types, and even importing the Encord type's module, must leave the Encord SDK unimported.
    script = (
        "import sys\n"
        "import tti_eval.dataset.types.encord_ds\n"
        "from tti_eval.dataset import DatasetProvider\n"
        f"for title in {list(digits_tree.titles.values())!r}:\n"
        "    dataset = DatasetProvider.get_dataset(title, 'validation')\n"
        "    print(title, len(dataset), dataset.class_names[-1])\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'encord'))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["digits-tree 80 digit 9", "digits-tree-hf 80 digit 9", "[]"]


# -- carving missing splits --------------------------------------------------------------------------------------------


def split_by_datasets(num_rows: int, missing: list[Split]) -> dict[Split, list[int]]:
    """The rule as SPEC §3 states it, applied with `datasets.Dataset.train_test_split` itself."""
    rows = datasets.Dataset.from_dict({"i": list(range(num_rows))})
    first = rows.train_test_split(test_size=0.15 * len(missing), seed=42)
    if len(missing) == 1:
        return {Split.TRAIN: first["train"]["i"], missing[0]: first["test"]["i"]}
    second = first["test"].train_test_split(test_size=0.5, seed=42)
    return {Split.TRAIN: first["train"]["i"], Split.VALIDATION: second["train"]["i"], Split.TEST: second["test"]["i"]}


@pytest.mark.parametrize("missing", [[Split.VALIDATION, Split.TEST], [Split.VALIDATION], [Split.TEST]])
@pytest.mark.parametrize("num_rows", [1, 2, 3, 4, 7, 20, 41, 100, 333])
def test_carving_indices_equal_datasets_train_test_split(num_rows: int, missing: list[Split]) -> None:
    try:
        expected = split_by_datasets(num_rows, missing)
    except ValueError:  # `datasets` refuses to leave an empty train part; so must we, in a sentence
        with pytest.raises(TTIEvalError, match="too small to carve"):
            carve_missing_splits(num_rows, missing)
        return
    carved = carve_missing_splits(num_rows, missing)
    assert {split: indices.tolist() for split, indices in carved.items()} == expected


@pytest.fixture(scope="module")
def train_only_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train-only")
    write_digits_tree(root, {"train": 7})
    return root


def test_hf_dataset_carves_like_the_original_tool(train_only_tree: Path, tmp_path: Path) -> None:
    source = datasets.load_dataset(str(train_only_tree), split="train", cache_dir=str(tmp_path / "reference"))
    held_out = source.train_test_split(test_size=0.3, seed=42)
    halves = held_out["test"].train_test_split(test_size=0.5, seed=42)
    expected = {Split.TRAIN: held_out["train"], Split.VALIDATION: halves["train"], Split.TEST: halves["test"]}
    for split, rows in expected.items():
        dataset = HFDataset("train-only", split=split, title_in_source=str(train_only_tree), cache_dir=tmp_path / "c")
        got = [(pixel_key(image), label) for image, label in map(dataset.get_image_and_label, range(len(dataset)))]
        assert got == [(pixel_key(row["image"]), row["label"]) for row in rows], split  # same rows, same order
    assert len(expected[Split.TRAIN]) == 49 and len(expected[Split.VALIDATION]) == 10


def test_image_folder_carves_with_the_same_rule(train_only_tree: Path) -> None:
    # The type lists train as sorted class folders, then sorted files; carving picks rows of that list by the rule.
    train_rows = [
        (pixel_key(Image.open(file)), file.parent.name) for file in sorted((train_only_tree / "train").glob("*/*.png"))
    ]
    expected = split_by_datasets(len(train_rows), [Split.VALIDATION, Split.TEST])
    for split, indices in expected.items():
        dataset = ImageFolderDataset("train-only", split=split, title_in_source=str(train_only_tree))
        got = [
            (pixel_key(image), dataset.class_names[label])
            for image, label in map(dataset.get_image_and_label, range(len(dataset)))
        ]
        assert got == [train_rows[i] for i in indices], split
    all_rows = ImageFolderDataset("train-only", split=Split.ALL, title_in_source=str(train_only_tree))
    assert len(all_rows) == 70


def test_hf_dataset_carves_only_the_missing_split(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    write_digits_tree(root, {"train": 4, "validation": 2})
    load = lambda split: HFDataset("partial", split=split, title_in_source=str(root), cache_dir=tmp_path / "c")  # noqa: E731
    train, validation, test = load(Split.TRAIN), load(Split.VALIDATION), load(Split.TEST)
    assert dataset_items(validation) == tree_items(root / "validation")
    assert (len(train), len(test)) == (34, 6)  # ceil(0.15 * 40) held out as test
    assert sorted(dataset_items(train) + dataset_items(test)) == tree_items(root / "train")
    assert test.carving == {"train_images": 40, "train": 34, "test": 6} and validation.carving is None


def test_image_folder_with_train_and_validation_keeps_train_whole_and_has_no_test(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    write_digits_tree(root, {"train": 4, "validation": 2})
    train = ImageFolderDataset("partial", split=Split.TRAIN, title_in_source=str(root))
    assert dataset_items(train) == tree_items(root / "train") and train.carving is None
    with pytest.raises(DefinitionError, match="has train and validation folders but no test folder"):
        ImageFolderDataset("partial", split=Split.TEST, title_in_source=str(root))


# -- labels from another column ----------------------------------------------------------------------------------------


def test_string_target_feature_is_class_encoded_across_splits(tmp_path: Path) -> None:
    root = tmp_path / "flowers"
    species = {"train": ["rose", "tulip", "rose", "daisy"], "validation": ["tulip", "rose"]}
    for split, names in species.items():
        (root / split).mkdir(parents=True)
        for index in range(len(names)):
            Image.new("L", (8, 8), 60 * index).save(root / split / f"{index}.png")  # greyscale on purpose
        lines = ["file_name,species", *(f"{i}.png,{name}" for i, name in enumerate(names))]
        (root / split / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    load = lambda split: HFDataset(  # noqa: E731
        "flowers", split=split, title_in_source=str(root), cache_dir=tmp_path / "c", target_feature="species"
    )
    train, validation = load(Split.TRAIN), load(Split.VALIDATION)
    assert train.class_names == validation.class_names == ["daisy", "rose", "tulip"]
    assert [validation.get_image_and_label(i)[1] for i in range(2)] == [2, 1]  # tulip, rose: the train indices
    assert train.get_image_and_label(0)[0].mode == "RGB"


# -- user-caused errors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset_type", FOLDER_TYPES, ids=lambda cls: cls.__name__)
def test_missing_local_folder(dataset_type: type[Dataset], tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="does not exist; fix 'title_in_source'") as error:
        dataset_type("gone", split=Split.TRAIN, title_in_source=str(tmp_path / "gone"), cache_dir=tmp_path / "c")
    assert str(tmp_path / "gone") in str(error.value)


def test_unknown_hub_dataset_while_offline(tmp_path: Path) -> None:
    with pytest.raises(
        TTIEvalError, match="'no-such-user/no-such-dataset' is not on the Hugging Face hub or in the offline cache"
    ) as error:
        HFDataset("nowhere", split=Split.TRAIN, title_in_source="no-such-user/no-such-dataset", cache_dir=tmp_path)
    assert "\n" not in str(error.value)


def test_target_feature_that_is_not_a_column(digits_tree: DigitsTree, tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match=r"has no column 'dx' \(columns: image, label\); set 'target_feature'"):
        HFDataset(
            "bad", split=Split.TEST, title_in_source=str(digits_tree.root), cache_dir=tmp_path, target_feature="dx"
        )


def test_image_folder_without_a_train_folder_or_with_unknown_fields(tmp_path: Path, digits_tree: DigitsTree) -> None:
    (tmp_path / "cats").mkdir()
    with pytest.raises(DefinitionError, match="has no train/ folder"):
        ImageFolderDataset("flat", split=Split.TRAIN, title_in_source=str(tmp_path))
    with pytest.raises(DefinitionError, match="does not accept the definition field\\(s\\) 'target_feature'"):
        ImageFolderDataset("x", split=Split.TRAIN, title_in_source=str(digits_tree.root), target_feature="y")


# -- every built-in type and definition --------------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", sorted(BUILTIN_DATASET_TYPES))
def test_builtin_type_imports_and_subclasses_dataset(type_name: str) -> None:
    module, _, name = BUILTIN_DATASET_TYPES[type_name].implementation.partition(":")
    cls = getattr(__import__(module, fromlist=[name]), name)
    assert issubclass(cls, Dataset) and cls.__name__ == type_name


@pytest.mark.parametrize("file", sorted((builtin_sources_path() / "datasets").glob("*.json")), ids=lambda p: p.stem)
def test_builtin_definition_is_valid_and_maps_to_a_builtin_type(file: Path) -> None:
    spec = DatasetDefinitionSpec.model_validate(json.loads(file.read_text(encoding="utf-8")))
    assert spec.module_path is None and spec.dataset_type in BUILTIN_DATASET_TYPES
    assert issubclass(DatasetProvider.registry.get_class(spec.title), Dataset)


def test_a_folder_with_a_loading_script_is_refused_with_how_to_convert(digits_tree: DigitsTree, tmp_path: Path) -> None:
    folder = tmp_path / "scripted"
    shutil.copytree(digits_tree.root, folder)
    (folder / "scripted.py").write_text("import datasets\n")
    with pytest.raises(
        DefinitionError, match=r"loading script \(scripted\.py\), and scripts are not supported.*parquet"
    ):
        HFDataset("scripted", split=Split.TRAIN, title_in_source=str(folder), cache_dir=tmp_path / "c")


# -- every built-in type is tested: order and split against independent references -------------------------------------

# Where each built-in dataset type's behaviour is tested. A type added to the registry without an entry here, or whose
# module does not exercise it, fails `test_every_builtin_dataset_type_has_behaviour_tests`.
BEHAVIOUR_TESTS = {
    "HFDataset": "test_dataset_types.py",
    "ImageFolderDataset": "test_dataset_types.py",
    "EncordDataset": "test_encord_dataset.py",
    "DigitsDataset": "test_dataset_types.py",
}


def test_every_builtin_dataset_type_has_behaviour_tests() -> None:
    assert set(BEHAVIOUR_TESTS) == set(BUILTIN_DATASET_TYPES)
    for type_name, module in BEHAVIOUR_TESTS.items():
        assert f"{type_name}(" in (Path(__file__).parent / module).read_text(encoding="utf-8"), type_name


def ordered_tree_items(folder: Path) -> list[tuple[str, str]]:
    """The documented order, computed with PIL alone: class folders sorted, then file names sorted in each."""
    return [
        (pixel_key(Image.open(file)), class_folder.name)
        for class_folder in sorted(p for p in folder.iterdir() if p.is_dir())
        for file in sorted(class_folder.glob("*.png"))
    ]


def test_items_come_in_the_documented_order_from_the_named_split(
    digits_splits: dict[Split, Dataset], digits_tree: DigitsTree
) -> None:
    """Not sorted before comparing: a type that shuffled its items, or served another split's, fails here."""
    for split in (Split.VALIDATION, Split.TEST):
        dataset = digits_splits[split]
        got = [(pixel_key(image), dataset.class_names[label]) for image, label in map(dataset.get_image_and_label,
                                                                                      range(len(dataset)))]  # fmt: skip
        assert got == ordered_tree_items(digits_tree.root / split.value), split


def test_digits_items_are_the_split_rows_of_load_digits_in_order() -> None:
    """Reference: scikit-learn's own stratified split (70 / 15 / 15, seed 42) and the images drawn as ink on paper."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from tti_eval.dataset.types.digits import DigitsDataset

    digits = load_digits()
    rows = np.arange(len(digits.target))
    train, held_out = train_test_split(rows, test_size=0.3, stratify=digits.target, random_state=42)
    validation, test = train_test_split(held_out, test_size=0.5, stratify=digits.target[held_out], random_state=42)
    for split, expected in ((Split.TRAIN, train), (Split.VALIDATION, validation), (Split.TEST, test)):
        dataset = DigitsDataset("digits", split=split, image_size=8)
        expected = np.sort(expected)
        assert [dataset.get_image_and_label(i)[1] for i in range(len(dataset))] == digits.target[expected].tolist()
        for position in (0, len(expected) // 2, len(expected) - 1):
            ink = digits.images[expected[position]]
            paper = (255 - np.rint(ink * 255 / 16)).astype(np.uint8)  # ink 0..16 → 255..0
            image = np.asarray(dataset.get_image_and_label(position)[0])
            np.testing.assert_array_equal(image, np.repeat(paper[:, :, None], 3, axis=2))
