"""The dataset splits, in a module of their own so that the CLI can declare its options without importing numpy or
pydantic (`tti_eval.common.base`, which re-exports `Split`)."""

from enum import StrEnum


class Split(StrEnum):
    TRAIN = "train"
    VALIDATION = "validation"
    TEST = "test"
    ALL = "all"

    @classmethod
    def _missing_(cls, value: object) -> "Split | None":
        # "Train" names the train split, as evaluator and reduction titles match in any letter case
        return next((s for s in cls if isinstance(value, str) and s.value == value.lower()), None)


DEFAULT_SPLITS = (Split.TRAIN, Split.VALIDATION)
"""What `build` builds and the scoring commands read when no split is named: the original tool's protocol."""
