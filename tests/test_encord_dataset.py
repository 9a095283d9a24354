"""EncordDataset against a fake Encord SDK.

Encord is unreachable from tests, so the fake stands in at the SDK boundary: a client with `get_project`, a project
with `title`, `ontology_structure`, `list_label_rows_v2` and `create_bundle`, and label rows / frame views /
classification instances with the attributes and methods of `encord.objects.LabelRowV2` and friends. The ontology
itself is a real `encord.objects.OntologyStructure`, so classification look-up and radio options go through the SDK.
Images are local PNG files served through `file://` links, so the real download code runs.
"""

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from encord.constants.enums import DataType
from encord.exceptions import LabelRowError, ResourceNotFoundError
from encord.objects import ChecklistAttribute, Classification, OntologyStructure, RadioAttribute
from encord.objects.common import Shape
from PIL import Image

from tti_eval.common.base import Split
from tti_eval.common.errors import DefinitionError, TTIEvalError
from tti_eval.dataset.splits import random_splits
from tti_eval.dataset.types import encord_ds
from tti_eval.dataset.types.encord_ds import EncordDataset

PROJECT_HASH = "00000000-fake-project"
CLASS_NAMES = ["zero", "one", "two"]
EDITED = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def build_ontology() -> tuple[OntologyStructure, dict[str, str]]:
    """A real ontology: a radio classification (the classes), a checklist classification and an object."""
    ontology = OntologyStructure()
    radio = ontology.add_classification(feature_node_hash="radio001")
    attribute = radio.add_attribute(RadioAttribute, "digit", feature_node_hash="radioatt")
    for name in CLASS_NAMES:
        attribute.add_option(name, feature_node_hash=f"opt-{name}")
    checklist = ontology.add_classification(feature_node_hash="check001")
    checklist.add_attribute(ChecklistAttribute, "flags", feature_node_hash="checkatt").add_option("blurry")
    ontology.add_object("box", Shape.BOUNDING_BOX, feature_node_hash="object01")
    return ontology, {"radio": "radio001", "checklist": "check001", "object": "object01", "attribute": "radioatt"}


# -- the fake SDK ------------------------------------------------------------------------------------------------------


@dataclass
class FakeFrame:
    image_hash: str
    image_title: str
    data_link: str
    answer: str | None  # option title, or None when the frame was left unclassified


class FakeClassificationInstance:
    def __init__(self, option: Any) -> None:
        self._option = option

    def get_answer(self, attribute: Any = None) -> Any:
        return self._option


class FakeFrameView:
    def __init__(self, row: "FakeLabelRow", frame: int) -> None:
        self._row, self._frame = row, frame
        data = row.frames[frame]
        self.image_hash, self.image_title, self.data_link = data.image_hash, data.image_title, data.data_link

    @property
    def frame(self) -> int:
        return self._frame

    def get_classification_instances(self, filter_ontology_classification: Any = None) -> list[Any]:
        answer = self._row.frames[self._frame].answer
        radio = self._row.ontology.get_child_by_hash("radio001", type_=Classification)
        if answer is None or filter_ontology_classification not in (None, radio):
            return []
        option = next(option for option in radio.attributes[0].options if option.title == answer)
        return [FakeClassificationInstance(option)]


class FakeLabelRow:
    def __init__(self, source: "RowSource", ontology: OntologyStructure, calls: dict[str, int]) -> None:
        self.data_hash, self.label_hash, self.data_type = source.data_hash, source.label_hash, source.data_type
        self.data_title, self.last_edited_at, self.frames = source.data_hash, source.last_edited_at, source.frames
        self.ontology, self._calls = ontology, calls
        self.is_labelling_initialised = False

    def initialise_labels(self, *args: Any, bundle: Any = None, include_signed_url: bool = False, **kwargs: Any):
        if self.is_labelling_initialised:
            raise LabelRowError("You are trying to re-initialize a label row that has already been initialized.")
        assert include_signed_url, "without signed URLs the data links cannot be downloaded"
        self._calls["initialise_labels"] += 1
        if bundle is None:
            self.is_labelling_initialised = True
        else:
            bundle.pending.append(self)

    def get_frame_views(self) -> list[FakeFrameView]:
        if not self.is_labelling_initialised:
            raise LabelRowError("Labels are not initialised; call initialise_labels first.")
        return [FakeFrameView(self, frame) for frame in range(len(self.frames))]


class FakeBundle:
    """Like `encord.http.bundle.Bundle`: bundled initialisations happen when the `with` block ends."""

    def __init__(self, calls: dict[str, int]) -> None:
        self.pending: list[FakeLabelRow] = []
        self._calls = calls

    def __enter__(self) -> "FakeBundle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._calls["bundles"] += 1
        for row in self.pending:
            row.is_labelling_initialised = True


@dataclass
class RowSource:
    data_hash: str
    data_type: DataType
    frames: list[FakeFrame]
    label_hash: str | None = None
    last_edited_at: dt.datetime = EDITED


@dataclass
class FakeProject:
    title: str
    project_hash: str
    ontology_structure: OntologyStructure
    rows: list[RowSource]
    calls: dict[str, int] = field(default_factory=lambda: {"initialise_labels": 0, "bundles": 0, "list": 0})

    def list_label_rows_v2(self, **filters: Any) -> list[FakeLabelRow]:
        self.calls["list"] += 1
        return [FakeLabelRow(row, self.ontology_structure, self.calls) for row in self.rows]  # fresh, like the SDK

    def create_bundle(self, bundle_size: int | None = None) -> FakeBundle:
        return FakeBundle(self.calls)


class FakeClient:
    def __init__(self, projects: dict[str, FakeProject], ssh_key_path: Path) -> None:
        self.projects, self.ssh_key_path = projects, ssh_key_path

    def get_project(self, project_hash: str) -> FakeProject:
        if project_hash not in self.projects:
            raise ResourceNotFoundError(f"Project {project_hash} not found or you do not have access to it.")
        return self.projects[project_hash]


# -- fixtures ----------------------------------------------------------------------------------------------------------


@dataclass
class Remote:
    project: FakeProject
    expected: dict[str, list[tuple[bytes, int]]]  # data hash -> [(pixels, class index)] of its answered frames
    storage: Path  # where the "remote" images live
    clients: list[FakeClient]
    downloads: list[str]


def make_image(folder: Path, name: str, seed: int) -> tuple[str, bytes]:
    pixels = np.random.default_rng(seed).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    path = folder / name
    Image.fromarray(pixels).save(path)
    return path.as_uri(), pixels.tobytes()


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_path: Path) -> Remote:
    """A project of 12 single images, 2 image groups (one frame left unanswered), a video and a never-labelled image,
    reachable through the SSH key in ENCORD_SSH_KEY_PATH."""
    storage = tmp_path / "encord-storage"
    storage.mkdir()
    ontology, _ = build_ontology()
    rows, expected = [], {}
    for i in range(14):
        group = i >= 12
        frames, truth = [], []
        for f in range(3 if group else 1):
            answer = None if (group and f == 1) else CLASS_NAMES[(i + f) % 3]
            link, pixels = make_image(storage, f"img-{i}-{f}.png", seed=10 * i + f)
            frames.append(FakeFrame(f"image-{i}-{f}", f"photo_{i}_{f}.png", link, answer))
            if answer is not None:
                truth.append((pixels, CLASS_NAMES.index(answer)))
        data_type = DataType.IMG_GROUP if group else DataType.IMAGE
        rows.append(RowSource(f"data-{i:02d}", data_type, frames, label_hash=f"label-{i:02d}"))
        expected[f"data-{i:02d}"] = truth
    link, _ = make_image(storage, "video-frame.png", seed=999)
    rows.append(RowSource("data-video", DataType.VIDEO, [FakeFrame("v", "clip.mp4", link, "one")], label_hash="lv"))
    rows.append(RowSource("data-unlabelled", DataType.IMAGE, [FakeFrame("u", "u.png", link, None)]))
    project = FakeProject("Fake digits", PROJECT_HASH, ontology, rows)

    remote = Remote(project, expected, storage, clients=[], downloads=[])

    def create_client(ssh_key_path: Path) -> FakeClient:
        client = FakeClient({PROJECT_HASH: project}, ssh_key_path)
        remote.clients.append(client)
        return client

    real_download = encord_ds.download

    def counting_download(url: str, destination: Path) -> None:
        remote.downloads.append(url)
        real_download(url, destination)

    monkeypatch.setattr(encord_ds, "create_client", create_client)
    monkeypatch.setattr(encord_ds, "download", counting_download)
    key = tmp_path / "encord-key"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n-----END OPENSSH PRIVATE KEY-----\n", encoding="ascii")
    monkeypatch.setenv("ENCORD_SSH_KEY_PATH", str(key))
    return remote


def load(split: Split = Split.ALL, **fields: Any) -> EncordDataset:
    fields = {"project_hash": PROJECT_HASH, "classification_hash": "radio001"} | fields
    return EncordDataset("fake-encord", split=split, **fields)


def items(dataset: EncordDataset) -> list[tuple[bytes, int]]:
    return sorted(
        (np.asarray(image).tobytes(), label)
        for image, label in (dataset.get_image_and_label(i) for i in range(len(dataset)))
    )


# -- behaviour ---------------------------------------------------------------------------------------------------------


def test_class_names_and_labels_come_from_the_radio_classification(remote: Remote) -> None:
    dataset = load()
    assert dataset.class_names == CLASS_NAMES
    assert dataset.prompts[2] == ["An image of a two"]
    assert items(dataset) == sorted(item for truth in remote.expected.values() for item in truth)
    assert len(dataset) == 12 + 2 * 2  # the unanswered frame, the video and the unlabelled row are left out
    image = dataset[0]["image"]
    assert isinstance(image, Image.Image) and image.mode == "RGB"
    assert remote.clients[0].ssh_key_path.name == "encord-key"


def test_images_are_downloaded_once_and_reused(remote: Remote, cache_path: Path) -> None:
    load()
    assert len(remote.downloads) == 16 and len(set(remote.downloads)) == 16
    assert remote.project.calls["initialise_labels"] == 14 and remote.project.calls["bundles"] == 1
    assert all(path.is_file() for path in (cache_path / "datasets" / "fake-encord" / PROJECT_HASH).glob("images/*/*"))

    again = load()
    assert len(remote.downloads) == 16  # nothing fetched again
    assert remote.project.calls["initialise_labels"] == 14
    assert len(again) == 16

    # An edit in Encord re-reads that row's labels only; its image is already on disk.
    row = remote.project.rows[0]
    row.frames[0].answer, row.last_edited_at = "two", EDITED + dt.timedelta(hours=1)
    edited = load()
    assert remote.project.calls["initialise_labels"] == 15 and len(remote.downloads) == 16
    assert items(edited).count((remote.expected["data-00"][0][0], 2)) == 1

    # A cached image that went missing is fetched again, alone.
    next((cache_path / "datasets" / "fake-encord" / PROJECT_HASH / "images" / "data-05").glob("*")).unlink()
    assert len(load()) == 16
    assert len(remote.downloads) == 17


def test_split_assignment_is_seeded_persisted_and_reused(remote: Remote, cache_path: Path) -> None:
    splits = {split: load(split) for split in (Split.TRAIN, Split.VALIDATION, Split.TEST)}
    stored = json.loads((cache_path / "datasets" / "fake-encord" / PROJECT_HASH / "splits.json").read_text())
    hashes = sorted(remote.expected)
    expected = {split: sorted(hashes[i] for i in indices) for split, indices in random_splits(len(hashes)).items()}
    for split, members in expected.items():
        assert sorted(h for h, s in stored["assignment"].items() if s == split.value) == members
        assert items(splits[split]) == sorted(item for h in members for item in remote.expected[h])
    assert [len(members) for members in expected.values()] == [9, 2, 3]

    # The stored assignment wins over the rule: a hand edit moves a row for good.
    moved = expected[Split.TRAIN][0]
    stored["assignment"][moved] = "test"
    (cache_path / "datasets" / "fake-encord" / PROJECT_HASH / "splits.json").write_text(json.dumps(stored))
    assert len(load(Split.TEST)) == len(splits[Split.TEST]) + len(remote.expected[moved])

    # A row added to the project later gets a split; the others keep theirs.
    link, _ = make_image(remote.storage, "new.png", seed=5)
    remote.project.rows.append(RowSource("data-new", DataType.IMAGE, [FakeFrame("n", "n.png", link, "one")], "l-new"))
    load(Split.TRAIN)
    updated = json.loads((cache_path / "datasets" / "fake-encord" / PROJECT_HASH / "splits.json").read_text())
    assert updated["assignment"] == stored["assignment"] | {"data-new": "train"}


def test_assignment_is_reproducible_in_a_fresh_cache(remote: Remote, tmp_path: Path) -> None:
    first = items(load(Split.VALIDATION, cache_dir=tmp_path / "one"))
    assert first == items(load(Split.VALIDATION, cache_dir=tmp_path / "two"))


# -- errors ------------------------------------------------------------------------------------------------------------


def test_missing_ssh_key(remote: Remote, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENCORD_SSH_KEY_PATH")
    with pytest.raises(TTIEvalError, match="needs your Encord SSH private key: set ENCORD_SSH_KEY_PATH"):
        load()
    with pytest.raises(TTIEvalError, match="does not exist; fix ENCORD_SSH_KEY_PATH"):
        load(ssh_key_path="/nowhere/key")
    assert remote.clients == []


@pytest.mark.parametrize("which", ["checklist", "object", "attribute", "missing"])
def test_classification_that_is_not_a_radio(remote: Remote, which: str) -> None:
    _, hashes = build_ontology()
    with pytest.raises(DefinitionError, match="is not a radio classification in the ontology of Encord project"):
        load(classification_hash=hashes.get(which, "deadbeef"))


def test_unreachable_project(remote: Remote) -> None:
    with pytest.raises(TTIEvalError) as error:
        load(project_hash="nope")
    assert str(error.value) == (
        "Cannot reach Encord project nope (Project nope not found or you do not have access to it.); check the "
        "project hash, that your SSH key has access to it, and your network."
    )


def test_definition_without_hashes_or_with_unknown_fields(remote: Remote) -> None:
    with pytest.raises(DefinitionError, match="needs both 'project_hash' and 'classification_hash'"):
        EncordDataset("fake-encord", project_hash=PROJECT_HASH)
    with pytest.raises(DefinitionError, match="does not accept the definition field\\(s\\) 'colour'"):
        load(colour="red")


def test_source_identity_is_the_label_version_of_each_data_unit_of_the_split(remote: Remote) -> None:
    validation = load(Split.VALIDATION)
    identity = validation.source_identity()["labels"]
    rows = {row.data_hash: row for row in remote.project.rows}
    assert identity and identity == {h: f"{rows[h].label_hash}@{rows[h].last_edited_at.isoformat()}" for h in identity}
    assert set(identity) == {str(path.parent.name) for path, _ in validation._items}  # the split's data units

    edited = rows[next(iter(identity))]
    edited.last_edited_at = EDITED + dt.timedelta(days=1)
    assert load(Split.VALIDATION).source_identity() != {"labels": identity}  # a relabelled unit changes it
