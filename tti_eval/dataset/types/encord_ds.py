"""Images of an Encord project, classified by one radio classification of the project's ontology.

Everything fetched is kept under the dataset cache folder, per project:

    <cache_dir>/<project_hash>/images/<data_hash>/<image_hash><suffix>   downloaded images
    <cache_dir>/<project_hash>/labels.json   per data unit: label version, [[image file, answer option hash], ...]
    <cache_dir>/<project_hash>/splits.json   data hash -> split, fixed once assigned

A later run lists the project's label rows (one call) and fetches labels and images only for rows that are new or were
edited since; images already on disk are never downloaded again. The Encord SDK is imported here only, and only when
such a dataset is loaded, so Hugging Face users never need it.
"""

import json
import shutil
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tti_eval.common.atomic import atomic_write
from tti_eval.common.base import Split
from tti_eval.common.errors import DefinitionError, TTIEvalError
from tti_eval.common.progress import task
from tti_eval.common.settings import get_settings
from tti_eval.dataset.base import ImageFileDataset
from tti_eval.dataset.splits import SPLIT_SEED, random_splits

MAX_WORKERS = 8  # downloads are I/O bound: threads overlap the waits


def create_client(ssh_key_path: Path) -> Any:
    """The one place that talks to Encord's authentication (tests replace it with a fake client)."""
    from encord import EncordUserClient

    return EncordUserClient.create_with_ssh_private_key(ssh_private_key_path=ssh_key_path)


def download(url: str, destination: Path) -> None:
    """Fetch `url` into `destination` atomically, so an interrupted run never leaves half an image."""
    with urllib.request.urlopen(url, timeout=60) as response:
        atomic_write(destination, lambda file: shutil.copyfileobj(response, file))


def _download_all(jobs: list[tuple[str, Path]], description: str) -> None:
    if not jobs:
        return
    with ThreadPoolExecutor(max_workers=MAX_WORKERS) as pool, task(description, len(jobs)) as downloading:
        for _ in pool.map(lambda job: download(*job), jobs):
            downloading.advance()


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, lambda file: file.write(json.dumps(data, indent=1, sort_keys=True).encode("utf-8")))


def _first_line(error: BaseException) -> str:
    # Encord's exceptions append a context (timestamps, ids) to str(); their `message` is the part a user needs.
    text = str(getattr(error, "message", None) or error)
    return (text.strip().splitlines() or [type(error).__name__])[0]


class EncordDataset(ImageFileDataset):
    """Definition fields: `project_hash`, `classification_hash` (a radio classification whose options are the classes)
    and optionally `ssh_key_path` (else `ENCORD_SSH_KEY_PATH`). Projects have no splits: each data unit is assigned
    to train/validation/test (70/15/15, seed 42) the first time it is seen, and keeps that split in `splits.json`."""

    def _setup(
        self,
        project_hash: str | None = None,
        classification_hash: str | None = None,
        ssh_key_path: str | Path | None = None,
    ) -> None:
        if not project_hash or not classification_hash:
            raise DefinitionError(
                f"Encord dataset '{self.title}' needs both 'project_hash' and 'classification_hash' in its definition."
            )
        project, rows = self._connect(project_hash, self._ssh_key(ssh_key_path))
        self._classification, self._attribute = self._radio_classification(project, classification_hash)
        options = list(self._attribute.options)
        self.class_names = [option.title for option in options]
        self._class_index = {option.feature_node_hash: index for index, option in enumerate(options)}

        self._folder = self.cache_dir / project_hash
        selected = self._assign_splits(rows)
        self._items = self._fetch(project, [row for row in rows if row.data_hash in selected])

    # -- talking to Encord ------------------------------------------------------------------------------------------

    def _ssh_key(self, ssh_key_path: str | Path | None) -> Path:
        path = ssh_key_path or get_settings().encord_ssh_key_path
        if path is None:
            raise TTIEvalError(
                f"Encord dataset '{self.title}' needs your Encord SSH private key: set ENCORD_SSH_KEY_PATH "
                "(environment or .env) or 'ssh_key_path' in the definition to its file path."
            )
        path = Path(path).expanduser()
        if not path.is_file():
            raise TTIEvalError(f"Encord SSH key file {path} does not exist; fix ENCORD_SSH_KEY_PATH or 'ssh_key_path'.")
        return path

    def _connect(self, project_hash: str, ssh_key: Path) -> tuple[Any, list[Any]]:
        from encord.constants.enums import DataType

        try:
            project = create_client(ssh_key).get_project(project_hash)
            rows = project.list_label_rows_v2()
        except Exception as e:  # the SDK raises many types (auth, HTTP, network); all mean the same to the user
            raise TTIEvalError(
                f"Cannot reach Encord project {project_hash} ({_first_line(e)}); check the project hash, that your "
                "SSH key has access to it, and your network."
            ) from None
        # Only images and image groups are classified frames; rows never labelled have no answers to read.
        return project, [
            row for row in rows if row.data_type in (DataType.IMAGE, DataType.IMG_GROUP) and row.label_hash
        ]

    def _radio_classification(self, project: Any, classification_hash: str) -> tuple[Any, Any]:
        from encord.exceptions import OntologyError
        from encord.objects import Classification, RadioAttribute

        try:
            classification = project.ontology_structure.get_child_by_hash(classification_hash, type_=Classification)
        except (OntologyError, TypeError):
            classification = None
        attributes = classification.attributes if classification is not None else []
        if not attributes or not isinstance(attributes[0], RadioAttribute):
            raise DefinitionError(
                f"'{classification_hash}' is not a radio classification in the ontology of Encord project "
                f"'{project.title}'; set 'classification_hash' to the feature hash of one."
            )
        return classification, attributes[0]

    # -- splits -----------------------------------------------------------------------------------------------------

    def _assign_splits(self, rows: list[Any]) -> set[str]:
        """Data hashes of `self.split`; hashes seen for the first time get a seeded split, persisted for good."""
        path = self._folder / "splits.json"
        stored = _read_json(path)
        assignment: dict[str, str] = stored.get("assignment", {})
        new = sorted({row.data_hash for row in rows} - set(assignment))
        if new:
            for split, indices in random_splits(len(new)).items():
                assignment.update({new[i]: split.value for i in indices})
            _write_json(path, {"seed": SPLIT_SEED, "assignment": assignment})
        current = {row.data_hash for row in rows}
        return {h for h in current if self.split is Split.ALL or assignment[h] == self.split.value}

    # -- labels and images ------------------------------------------------------------------------------------------

    def _fetch(self, project: Any, rows: list[Any]) -> list[tuple[Path, int]]:
        labels_path = self._folder / "labels.json"
        labels = _read_json(labels_path)
        stale = [row for row in rows if not self._is_cached(labels.get(row.data_hash), row)]
        if stale:
            try:
                with project.create_bundle() as bundle:  # a few batched requests instead of one per row
                    for row in stale:
                        row.initialise_labels(bundle=bundle, include_signed_url=True)
            except Exception as e:
                raise TTIEvalError(
                    f"Reading labels from Encord project '{project.title}' failed ({_first_line(e)}); run again."
                ) from None
        fetched = [(row, self._answered_frames(row)) for row in stale]
        downloads = [(url, file) for _, frames in fetched for url, file, _ in frames if not file.is_file()]
        try:
            _download_all(downloads, f"Downloading images of '{project.title}'")
        except Exception as e:
            raise TTIEvalError(
                f"Downloading images from Encord project '{project.title}' failed ({_first_line(e)}); run again to "
                "resume (finished images are kept)."
            ) from None
        for row, frames in fetched:
            labels[row.data_hash] = {
                "version": _version(row),
                "frames": [[file.relative_to(self._folder).as_posix(), option] for _, file, option in frames],
            }
        if fetched:
            _write_json(labels_path, labels)
        self._label_versions = {row.data_hash: labels[row.data_hash]["version"] for row in rows}
        return list(self._items_of(sorted(row.data_hash for row in rows), labels))

    def source_identity(self) -> dict[str, Any]:
        # The data units of this split and their label versions: a relabelled or added image changes them.
        return {"labels": dict(sorted(self._label_versions.items()))}

    def _is_cached(self, entry: dict[str, Any] | None, row: Any) -> bool:
        return (
            entry is not None
            and entry["version"] == _version(row)
            and all((self._folder / file).is_file() for file, _ in entry["frames"])
        )

    def _answered_frames(self, row: Any) -> list[tuple[str, Path, str]]:
        """[(image url, cache file, answer option hash)] for each frame of `row` the radio classification answers."""
        frames = []
        for view in row.get_frame_views():
            instances = view.get_classification_instances(self._classification)
            answer = instances[0].get_answer(self._attribute) if instances else None
            if answer is None:  # frame left unclassified
                continue
            if not view.data_link:
                raise TTIEvalError(
                    f"Encord gave no download link for image '{view.image_title}'; check the project's storage access."
                )
            suffix = Path(view.image_title).suffix or ".jpg"
            file = self._folder / "images" / row.data_hash / f"{view.image_hash}{suffix}"
            frames.append((view.data_link, file, answer.feature_node_hash))
        return frames

    def _items_of(self, data_hashes: Iterable[str], labels: dict[str, Any]) -> Iterable[tuple[Path, int]]:
        for data_hash in data_hashes:
            for file, option in labels[data_hash]["frames"]:
                if option in self._class_index:  # an option deleted from the ontology is no longer a class
                    yield self._folder / file, self._class_index[option]


def _version(row: Any) -> str:
    """What identifies a row's labels: a new label hash or a later edit means they must be read again."""
    edited = row.last_edited_at.isoformat() if row.last_edited_at else ""
    return f"{row.label_hash}@{edited}"
