from typing import ClassVar

from pydantic import field_validator

from tti_eval.common.base import Split
from tti_eval.common.registry import DefinitionSpec


class DatasetDefinitionSpec(DefinitionSpec):
    """A dataset declared in `sources/datasets/*.json`.

    `templates` are zero-shot prompts with `{}` for the class name; several are averaged into one class embedding.
    `target_feature` names the label column when it is not `label`. Extra fields (e.g. `revision`, `name`) are passed
    to the dataset type, which for `HFDataset` hands them to `datasets.load_dataset`.
    """

    type_field: ClassVar[str] = "dataset_type"

    dataset_type: str
    split: Split | None = None
    target_feature: str | None = None
    templates: list[str] | None = None

    @field_validator("templates")
    @classmethod
    def _templates_have_a_slot(cls, templates: list[str] | None) -> list[str] | None:
        if templates is not None:
            if not templates:
                raise ValueError("give at least one template, e.g. 'An image of a {}'")
            for template in templates:
                if template.count("{}") != 1:
                    raise ValueError(f"template '{template}' must contain exactly one '{{}}' for the class name")
        return templates
