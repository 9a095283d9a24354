from typing import ClassVar

from tti_eval.common.registry import DefinitionSpec


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
