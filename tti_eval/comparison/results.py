"""The results of a comparison as validated data: what `compare --save` writes as JSON (its schema is generated from
these models) and what the markdown and HTML reports are rendered from."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Interval(_Frozen):
    """A point estimate with the bounds of its percentile bootstrap interval."""

    value: float
    low: float
    high: float


class ModelResult(_Frozen):
    """One model's main metric on one (dataset, evaluator, split); rank 1 is the best, equal values share the mean of
    their ranks."""

    model: str
    rank: float
    value: float
    low: float
    high: float


class Comparison(_Frozen):
    """One model against the best model of its group on the same images."""

    model: str
    best: str
    difference: Interval = Field(description="model minus best, with its paired bootstrap interval")
    p_value: float = Field(description="McNemar's exact p (0/1 outcomes) or the sign-flip permutation p (scores)")
    p_adjusted: float = Field(description="Holm-adjusted over the comparisons of this group")
    tied_with_best: bool = Field(description="p_adjusted >= alpha: the data cannot tell this model from the best")
    n: int = Field(description="images (or queries) scored by both models")
    best_only_correct: int | None = Field(None, description="images only the best got right (McNemar)")
    model_only_correct: int | None = Field(None, description="images only this model got right (McNemar)")


class ClassResult(_Frozen):
    """One class of one classifier; recall is None for a class with no image, precision for one never predicted."""

    name: str
    support: int
    recall: Interval | None
    precision: float | None


class PerClassResult(_Frozen):
    model: str
    classes: list[ClassResult]
    confusion_matrix: list[list[int]] = Field(description="rows: true class, columns: predicted class")


class GroupComparison(_Frozen):
    """The models compared on one (dataset, evaluator, split), ranked best first."""

    dataset: str
    evaluator: str
    split: str
    metric: str
    higher_is_better: bool
    test: Literal["mcnemar", "sign_flip"]
    permutations: int | None = Field(
        None, description="sign flips drawn: enough that the smallest possible p survives Holm over all pairs"
    )
    n: int
    results: list[ModelResult]
    comparisons: list[Comparison]
    per_class: list[PerClassResult] = []


class Standing(_Frozen):
    """A model's mean rank over the groups (datasets) of one evaluator and split it was compared in."""

    model: str
    mean_rank: float
    datasets: int


class HeadToHead(_Frozen):
    """How often `model` beat, tied with, or lost to `other` over datasets; a tie is a difference that is not
    significant after Holm's adjustment over all pairs of models on that dataset."""

    model: str
    other: str
    wins: int
    ties: int
    losses: int


class Leaderboard(_Frozen):
    """One evaluator and split across datasets, models ordered by mean rank."""

    evaluator: str
    split: str
    metric: str
    standings: list[Standing]
    head_to_head: list[HeadToHead]


class ComparisonRun(_Frozen):
    """Everything `compare` found, with what is needed to reproduce it."""

    created: str
    alpha: float
    confidence: float
    n_resamples: int
    seed: int
    versions: dict[str, str]
    groups: list[GroupComparison]
    leaderboards: list[Leaderboard]
