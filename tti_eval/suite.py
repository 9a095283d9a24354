"""A benchmark suite: the models, datasets, evaluators, splits and evaluator parameters a team runs, kept in a JSON
file in git and given to `tti-eval build/evaluate --suite FILE`. Its schema is `sources/suite-schema.json`."""

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tti_eval.common.errors import TTIEvalError
from tti_eval.common.split import Split


class Suite(BaseModel):
    """Every model times every dataset; titles or shell patterns such as `siglip*`, in any letter case."""

    model_config = ConfigDict(extra="forbid")

    schema_path: str | None = Field(
        default=None, alias="$schema", description="The schema editors validate this file with (not read by tti-eval)."
    )
    models: list[str] = Field(min_length=1, description="Model titles or shell patterns, e.g. 'siglip*'.")
    datasets: list[str] = Field(min_length=1, description="Dataset titles or shell patterns.")
    evaluators: list[str] = Field(default=[], description="Evaluator titles (any letter case). Empty: all.")
    splits: list[Split] = Field(default=[], description="Splits to build. Empty: train and validation.")
    params: dict[str, dict[str, Any]] = Field(
        default={}, description='Evaluator parameters by evaluator title, e.g. {"wKNN": {"k": 21}}.'
    )

    @classmethod
    def read(cls, path: Path) -> "Suite":
        """The suite in `path`; a missing file, bad JSON or a wrong field is one sentence naming the file."""
        try:
            return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise TTIEvalError(f"Cannot read the suite file {path}: {e.strerror}.") from None
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "the file"
            raise TTIEvalError(
                f"The suite file {path} is not valid at {where}: {first['msg']}; see sources/suite-schema.json."
            ) from None
