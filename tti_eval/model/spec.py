"""What a model definition may say: the fields every model has, and each built-in type's own fields.

Light to import (no torch, no open_clip), so every file in `sources/` is checked field by field when it is read and
`tti-eval list --all` reports a typo'd or wrongly-typed field with its file. Each type's `offline_check()` is a cheap
look, short of loading, at whether the named source can exist at all.
"""

from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from tti_eval.common.registry import DefinitionSpec, TypeSpec, check_path_exists
from tti_eval.common.title_registry import did_you_mean


class ModelDefinitionSpec(DefinitionSpec):
    """A model declared in `sources/models/*.json`.

    `model_type` names a built-in type (HFModel, OpenCLIPModel, LocalCLIPModel, ...) or a class defined in the file
    at `module_path` (relative to the JSON file). `title_in_source` is the name the source knows it by (a hub id, an
    OpenCLIP architecture); `pretrained` is an OpenCLIP pretrained tag or a checkpoint path.
    """

    type_field: ClassVar[str] = "model_type"

    model_type: str
    device: str | None = None
    pretrained: str | None = None


def looks_like_local_path(name: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else that names a folder is meant as a local directory."""
    return name.startswith((".", "~", "/", "\\")) or Path(name).is_absolute() or name.count("/") > 1 or "\\" in name


class HFModelSpec(ModelDefinitionSpec, TypeSpec):
    """transformers CLIP/SigLIP: `title_in_source` is a hub id or a `save_pretrained` folder. `trust_remote_code`
    runs the repository's own Python code, so it is off unless the definition opts in."""

    implementation: ClassVar[str] = "tti_eval.model.types.hugging_face:HFModel"

    trust_remote_code: bool | None = Field(default=None, strict=True)  # only a JSON true opts in, not "yes"

    def offline_check(self) -> None:
        source = self.title_in_source or self.title
        if looks_like_local_path(source):
            check_path_exists("title_in_source", Path(source).expanduser())


class OpenCLIPModelSpec(ModelDefinitionSpec, TypeSpec):
    """open_clip: an architecture with a `pretrained` tag or checkpoint file, `hf-hub:org/repo`, or
    `local-dir:/folder`. `model_config_path` registers a team's own architecture JSON (file or folder) first."""

    implementation: ClassVar[str] = "tti_eval.model.types.open_clip_model:OpenCLIPModel"

    model_config_path: Path | None = None

    def offline_check(self) -> None:
        from tti_eval.model.types.open_clip_model import check_open_clip_source

        check_open_clip_source(self.title_in_source or self.title, self.pretrained, self.model_config_path)


class LocalCLIPModelSpec(ModelDefinitionSpec, TypeSpec):
    """An OpenCLIP architecture with weights from `checkpoint_path` (default `<cache>/models/<title>/checkpoint.pt`)."""

    implementation: ClassVar[str] = "tti_eval.model.types.open_clip_model:LocalCLIPModel"

    checkpoint_path: Path | None = None
    model_config_path: Path | None = None

    @field_validator("pretrained")
    @classmethod
    def _no_pretrained(cls, pretrained: str | None) -> None:
        if pretrained is not None:
            raise ValueError("this type reads its weights from checkpoint_path, not pretrained; rename the field")
        return None

    def offline_check(self) -> None:
        from tti_eval.model.types.open_clip_model import check_open_clip_source

        if self.checkpoint_path is not None:
            check_path_exists("checkpoint_path", self.checkpoint_path.expanduser())
        check_open_clip_source(self.title_in_source or self.title, None, self.model_config_path)


def _known_dataset(title: str) -> str:
    from tti_eval.dataset import DatasetProvider

    titles = DatasetProvider.list_dataset_titles()
    if title not in titles:
        hint = did_you_mean(title, titles)
        raise ValueError(f"'{title}' is not a known dataset; name one that `tti-eval list --all` shows. {hint}".strip())
    return title


class DigitsCLIPModelSpec(ModelDefinitionSpec, TypeSpec):
    """A tiny CLIP that tti-eval trains itself on `training_dataset`'s train split for `epochs` (0: untrained)."""

    implementation: ClassVar[str] = "tti_eval.model.types.digits_clip:DigitsCLIPModel"

    checkpoint_path: Path | None = None
    training_dataset: str | None = None
    epochs: int | None = Field(default=None, ge=0, le=1000)
    seed: int | None = Field(default=None, ge=0)

    @field_validator("training_dataset")
    @classmethod
    def _training_dataset_is_known(cls, title: str | None) -> str | None:
        return _known_dataset(title) if title is not None else None

    def offline_check(self) -> None:
        from tti_eval.model.types.open_clip_model import check_open_clip_source

        check_open_clip_source(self.title_in_source or self.title, None, None)


BUILTIN_MODEL_TYPES: dict[str, type[ModelDefinitionSpec]] = {
    spec.implementation.rpartition(":")[2]: spec
    for spec in (HFModelSpec, OpenCLIPModelSpec, LocalCLIPModelSpec, DigitsCLIPModelSpec)
}
