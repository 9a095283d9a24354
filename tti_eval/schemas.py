"""JSON schemas of the definition files and of saved results, generated from the pydantic models.

Regenerate after changing a spec with `python -m tti_eval.schemas`; a test fails while the committed files differ.
Editors that understand `$schema` then validate and complete `sources/*.json` as they are typed.
"""

import json

from tti_eval.common.settings import builtin_sources_path
from tti_eval.comparison.results import ComparisonRun
from tti_eval.dataset.spec import DatasetDefinitionSpec
from tti_eval.model.spec import ModelDefinitionSpec

SCHEMA_SPECS = {
    "model-definition-schema.json": ModelDefinitionSpec,
    "dataset-definition-schema.json": DatasetDefinitionSpec,
    "compare-schema.json": ComparisonRun,  # compare_<timestamp>.json
}


def render_schemas() -> dict[str, str]:
    rendered = {}
    for file_name, spec in SCHEMA_SPECS.items():
        schema = spec.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        rendered[file_name] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return rendered


def main() -> None:
    folder = builtin_sources_path()
    for file_name, text in render_schemas().items():
        (folder / file_name).write_text(text, encoding="utf-8")
        print(f"wrote {folder / file_name}")


if __name__ == "__main__":
    main()
