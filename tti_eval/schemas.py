"""JSON schemas of the definition files and of saved results, generated from the pydantic models.

Regenerate after changing a spec with `python -m tti_eval.schemas`; a test fails while the committed files differ.
Editors that understand `$schema` then validate and complete `sources/*.json` as they are typed: a definition of a
built-in type must match that type's fields exactly; any other type must name the `module_path` that defines it.
"""

import json
from typing import Any

from tti_eval.common.registry import DefinitionSpec
from tti_eval.common.settings import builtin_sources_path
from tti_eval.comparison.results import ComparisonRun
from tti_eval.dataset.spec import BUILTIN_DATASET_TYPES, DatasetDefinitionSpec
from tti_eval.evaluation.records import EvaluationFile
from tti_eval.model.spec import BUILTIN_MODEL_TYPES, ModelDefinitionSpec
from tti_eval.suite import Suite

DEFINITION_SPECS = {
    "model-definition-schema.json": (ModelDefinitionSpec, BUILTIN_MODEL_TYPES),
    "dataset-definition-schema.json": (DatasetDefinitionSpec, BUILTIN_DATASET_TYPES),
}
RESULT_MODELS = {
    "compare-schema.json": ComparisonRun,  # compare_<timestamp>.json
    "evaluation-schema.json": EvaluationFile,  # eval_<timestamp>.json
    "suite-schema.json": Suite,  # the benchmark a team keeps in git: tti-eval build/evaluate --suite FILE
}
_REF = "#/$defs/{model}"


def definition_schema(base: type[DefinitionSpec], builtin_types: dict[str, type[DefinitionSpec]]) -> dict[str, Any]:
    """Any of: one variant per built-in type (its type field fixed to its name), or a type from a `module_path`."""
    definitions: dict[str, Any] = {}
    variants = []
    for name, spec in sorted(builtin_types.items()):
        schema = spec.model_json_schema(ref_template=_REF)
        definitions |= schema.pop("$defs", {})
        schema["properties"][base.type_field] = {"const": name, "title": schema["properties"][base.type_field]["title"]}
        definitions[spec.__name__] = schema
        variants.append({"$ref": _REF.format(model=spec.__name__)})
    custom = base.model_json_schema(ref_template=_REF)
    definitions |= custom.pop("$defs", {})
    custom["required"] = sorted({*custom.get("required", []), "module_path"})
    definitions[base.__name__] = custom
    variants.append({"$ref": _REF.format(model=base.__name__)})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": base.__name__,
        "description": base.__doc__.split("\n\n")[0] if base.__doc__ else "",
        "anyOf": variants,
        "$defs": definitions,
    }


def render_schemas() -> dict[str, str]:
    schemas = {file_name: definition_schema(base, types) for file_name, (base, types) in DEFINITION_SPECS.items()}
    for file_name, model in RESULT_MODELS.items():
        schemas[file_name] = model.model_json_schema() | {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    return {file_name: json.dumps(schema, indent=2, sort_keys=True) + "\n" for file_name, schema in schemas.items()}


def main() -> None:
    folder = builtin_sources_path()
    for file_name, text in render_schemas().items():
        (folder / file_name).write_text(text, encoding="utf-8")
        print(f"wrote {folder / file_name}")


if __name__ == "__main__":
    main()
