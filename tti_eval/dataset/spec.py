"""What a dataset definition may say: the fields every dataset has, and each built-in type's own fields.

Light to import (no torch, no `datasets`), so every file in `sources/` is checked field by field when it is read; see
`tti_eval.model.spec` for the same on the model side.
"""

import string
from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from tti_eval.common.errors import DefinitionError
from tti_eval.common.registry import DefinitionSpec, TypeSpec, check_path_exists
from tti_eval.common.split import Split


def check_template(template: str) -> str:
    """A template is formatted with the class name alone: exactly one `{}` and no other field to fill."""
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)]
    except ValueError as e:  # a lone '{' or '}'
        raise ValueError(
            f"template '{template}' cannot be formatted ({e}); write literal braces as '{{{{' or '}}}}'"
        ) from None
    fields = [field for field in fields if field[0] is not None]
    if fields != [("", "", None)]:
        raise ValueError(
            f"template '{template}' must contain exactly one '{{}}' for the class name and no other '{{...}}' field"
        )
    return template


class DatasetDefinitionSpec(DefinitionSpec):
    """A dataset declared in `sources/datasets/*.json`.

    `templates` are zero-shot prompts with `{}` for the class name; several are averaged into one class embedding.
    `target_feature` names the label column when it is not `label`.
    """

    type_field: ClassVar[str] = "dataset_type"

    dataset_type: str
    split: Split | None = None
    target_feature: str | None = None
    templates: list[str] | None = None

    def source_identity_is_pinned(self) -> bool:
        """Whether the source's own identity that a cached split records (a hub dataset's fingerprint, label versions)
        cannot have changed since the build, so that `build` may keep the split without opening the dataset to
        re-check it. Default: no, only the source can say."""
        return False

    @field_validator("templates")
    @classmethod
    def _templates_have_one_slot(cls, templates: list[str] | None) -> list[str] | None:
        if templates is not None:
            if not templates:
                raise ValueError("give at least one template, e.g. 'An image of a {}'")
            for template in templates:
                check_template(template)
        return templates


def local_source(title_in_source: str) -> Path | None:
    """The folder a definition points at, or None for a hub name; a path-like name that is not there is an error."""
    path = Path(title_in_source).expanduser()
    if path.exists():
        return path
    if path.is_absolute() or title_in_source.startswith((".", "~")):
        raise DefinitionError(f"Dataset folder {path} does not exist; fix 'title_in_source' in the definition.")
    return None


def check_no_loading_script(title: str, folder: Path) -> None:
    """`datasets` no longer runs loading scripts, and tti-eval would not run a stranger's code at load anyway."""
    scripts = sorted(p.name for p in folder.glob("*.py")) if folder.is_dir() else []
    if scripts:
        raise DefinitionError(
            f"Dataset '{title}': {folder} holds a loading script ({scripts[0]}), and scripts are not supported; "
            "convert the data to parquet files (e.g. `datasets.Dataset.to_parquet`) or to an image folder "
            "(<split>/<class>/<image>) and point title_in_source at that."
        )


class HFDatasetSpec(DatasetDefinitionSpec, TypeSpec):
    """A `datasets` dataset: a hub id or a local folder `load_dataset` reads (parquet, imagefolder). `revision`,
    `name`, `data_dir` and `data_files` are passed to `load_dataset` as they are."""

    implementation: ClassVar[str] = "tti_eval.dataset.types.hugging_face:HFDataset"

    revision: str | None = None
    name: str | None = None
    data_dir: str | None = None
    data_files: str | list[str] | dict[str, str | list[str]] | None = None

    def offline_check(self) -> None:
        folder = local_source(self.title_in_source or self.title)
        if folder is not None:
            check_no_loading_script(self.title, folder)

    def source_identity_is_pinned(self) -> bool:
        # With HF_HUB_OFFLINE set the hub is never asked: `datasets` reloads the copy it prepared in this definition's
        # cache folder when the split was built, whose fingerprint is the recorded one.
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE) and local_source(self.title_in_source or self.title) is None


class ImageFolderDatasetSpec(DatasetDefinitionSpec, TypeSpec):
    """A plain `root/<split>/<class>/<image>` tree; `title_in_source` is the root. No fields of its own."""

    implementation: ClassVar[str] = "tti_eval.dataset.types.image_folder:ImageFolderDataset"

    def offline_check(self) -> None:
        check_path_exists("title_in_source", Path(self.title_in_source or self.title).expanduser())


class EncordDatasetSpec(DatasetDefinitionSpec, TypeSpec):
    """An Encord project's images, classified by one radio classification of its ontology."""

    implementation: ClassVar[str] = "tti_eval.dataset.types.encord_ds:EncordDataset"

    project_hash: str = Field(pattern=r"^[0-9A-Za-z-]+$", description="The project's hash (a UUID).")
    classification_hash: str = Field(
        pattern=r"^[0-9A-Za-z]+$",
        description="The feature hash of the radio classification whose options are the classes.",
    )
    ssh_key_path: Path | None = None

    def offline_check(self) -> None:
        if self.ssh_key_path is not None:
            check_path_exists("ssh_key_path", self.ssh_key_path.expanduser())


class DigitsDatasetSpec(DatasetDefinitionSpec, TypeSpec):
    """scikit-learn's bundled digits, drawn at `image_size` pixels; nothing to download, so nothing to check."""

    implementation: ClassVar[str] = "tti_eval.dataset.types.digits:DigitsDataset"

    image_size: int | None = Field(default=None, ge=8, le=1024)

    def offline_check(self) -> None:
        return None


BUILTIN_DATASET_TYPES: dict[str, type[DatasetDefinitionSpec]] = {
    spec.implementation.rpartition(":")[2]: spec
    for spec in (HFDatasetSpec, ImageFolderDatasetSpec, EncordDatasetSpec, DigitsDatasetSpec)
}
