"""What every evaluator shares: its declaration (`EvaluatorSpec`), the registry of declared evaluators, input
checks, the class count, and scores computed from stored outcomes.

An evaluator declares itself once, in its own module, as a class attribute `spec` and a `@register_evaluator`
decorator; its default parameters, the CLI's `--evaluator` choices, the CSV columns, chart and table labels are all
read from the declarations, so a new evaluator is one new module (a notebook or plugin calls `register_evaluator`).

Evaluators keep references to the caller's embeddings and only ever read them: normalised copies are made where
needed (a whole matrix for the linear probe, a block at a time for the searches), so that neither the caller's
arrays nor any global state change, and memory stays near the size of the inputs.
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from tti_eval.common.base import Embeddings
from tti_eval.common.errors import InvalidEmbeddingsError, TTIEvalError
from tti_eval.common.title_registry import TitleRegistry
from tti_eval.common.vectors import check_vectors

from ._metrics import (
    N_RESAMPLES,
    SEED,
    Metric,
    Score,
    classification_scores,
    classification_statistics,
    top_k_hits,
)


class InvalidParametersError(TTIEvalError, ValueError):
    """An evaluator was given a parameter it does not have, or a value outside its range."""


class NoParams(BaseModel):
    """The parameters of an evaluator that has none."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class EvaluatorSpec:
    """An evaluator's declaration.

    `params` is a pydantic model whose field defaults are the evaluator's defaults (forbid extra fields, so a typo'd
    parameter is an error); `metrics` are all it reports, `main_metric` among them the one its tables, charts and the
    CSV's Accuracy column show. `neighbours_val_to_train` / `neighbours_train_to_val` name the integer parameter that
    says how many nearest neighbours it reads in that direction, so one search can serve every evaluator of a pair;
    `neighbours_capped_by_class` says it reads no more of a query's neighbours than the searched split holds of the
    query's class (I2IR's Q), so the search ranks only those exactly, which at 20 images per class is a fifth of
    k = 100.
    `tunes_on_validation`: when the test split is scored, the evaluator takes the validation split as
    `tuning_embeddings` to choose its hyper-parameters on (others simply score the test split).
    """

    title: str
    description: str  # one line, for `--help` and documentation
    main_metric: Metric
    metrics: tuple[Metric, ...]
    params: type[BaseModel] = NoParams
    needs_class_embeddings: bool = False
    neighbours_val_to_train: str | None = None
    neighbours_train_to_val: str | None = None
    neighbours_capped_by_class: bool = False
    tunes_on_validation: bool = False

    def __post_init__(self) -> None:
        if self.main_metric not in self.metrics:
            raise ValueError(f"{self.title}'s main metric {self.main_metric.name} is not among its metrics")
        for name in (self.neighbours_val_to_train, self.neighbours_train_to_val):
            if name is not None and self.params.model_fields.get(name, None) is None:
                raise ValueError(f"{self.title}'s parameters have no field '{name}' to size its neighbours")

    def parse_params(self, params: dict[str, Any] | BaseModel | None = None) -> BaseModel:
        """Validated parameters, the declared defaults filling in what `params` leaves out."""
        if isinstance(params, self.params):
            return params
        try:
            return self.params.model_validate(params or {})
        except ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            known = ", ".join(self.params.model_fields) or "none"
            raise InvalidParametersError(
                f"{self.title} parameter '{where}': {problem['msg']}; its parameters are: {known}."
            ) from None

    def neighbour_request(
        self, params: BaseModel, train: Embeddings, validation: Embeddings
    ) -> tuple[int | np.ndarray, int | np.ndarray]:
        """How many (validation → train, train → validation) nearest neighbours it reads with these parameters on
        these splits: one count for every query, or one per query."""
        directions = ((validation.labels, train.labels), (train.labels, validation.labels))
        return tuple(
            self._neighbour_count(params, name, queries, searched)
            for name, (queries, searched) in zip(self._neighbour_fields, directions, strict=True)
        )

    def _neighbour_count(
        self, params: BaseModel, name: str | None, queries: np.ndarray, searched: np.ndarray
    ) -> int | np.ndarray:
        k = 0 if name is None else int(getattr(params, name))
        if not (k and self.neighbours_capped_by_class):
            return k
        return np.minimum(k, query_class_sizes(queries, searched))

    @property
    def _neighbour_fields(self) -> tuple[str | None, str | None]:
        return self.neighbours_val_to_train, self.neighbours_train_to_val


class EvaluationModel(ABC):
    """An evaluator: construct it with `(train_embeddings, validation_embeddings, num_classes=None, **params)`,
    where `params` are the fields of its `spec.params`."""

    spec: ClassVar[EvaluatorSpec]

    def __init__(
        self,
        train_embeddings: Embeddings,
        validation_embeddings: Embeddings,
        num_classes: int | None = None,
        **params: Any,
    ) -> None:
        self.params = self.spec.parse_params(params)
        check_vectors(train_embeddings.images, "train images")
        check_vectors(validation_embeddings.images, "validation images")
        if train_embeddings.dim != validation_embeddings.dim:
            raise InvalidEmbeddingsError(
                f"Train images have dimension {train_embeddings.dim} but validation images have dimension "
                f"{validation_embeddings.dim}; build both splits with the same model."
            )
        self._train = train_embeddings
        self._val = validation_embeddings
        seen = int(max(train_embeddings.labels.max(), validation_embeddings.labels.max())) + 1
        if num_classes is not None and num_classes < seen:
            raise InvalidEmbeddingsError(
                f"The labels use {seen} classes but only {num_classes} are declared; rebuild the embeddings."
            )
        self._num_classes = seen if num_classes is None else num_classes
        self.notes: list[str] = []  # sentences that qualify the scores (e.g. a solver that did not converge)
        self.chosen: dict[str, float] = {}  # parameters the evaluator chose itself (e.g. the linear probe's C)

    @classmethod
    def title(cls) -> str:
        return cls.spec.title

    @classmethod
    def get_default_params(cls) -> dict[str, Any]:
        return cls.spec.parse_params().model_dump()

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @abstractmethod
    def evaluate(self) -> float:
        """The main metric's value (for the original four evaluators, the original tool's number)."""

    @abstractmethod
    def scores(self, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> dict[str, Score]:
        """Every metric with its bootstrap interval, from the outcomes `evaluate` stored (nothing is re-run)."""

    @abstractmethod
    def outcomes(self) -> dict[str, np.ndarray]:
        """The per-item arrays behind the scores, by `EvaluationResult` field name (`labels`, `predictions`, ...)."""


class ClassificationModel(EvaluationModel):
    """A classifier of validation images; it reports `CLASSIFICATION_METRICS`, computed from its predictions."""

    @abstractmethod
    def _predict(self) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities [n_val, num_classes], predicted classes [n_val]) for the validation images."""

    @cached_property
    def _predictions(self) -> tuple[np.ndarray, np.ndarray]:
        return self._predict()

    def predict(self) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities [n_val, num_classes], predicted classes [n_val]); computed once, then stored."""
        return self._predictions

    @cached_property
    def top5_hits(self) -> np.ndarray | None:
        """Whether each validation image's true class ranks in the first five; None below five classes."""
        probabilities, _ = self.predict()
        return top_k_hits(probabilities, self._val.labels, 5) if probabilities.shape[1] >= 5 else None

    def evaluate(self) -> float:
        _, predicted = self.predict()
        statistics = classification_statistics(self._val.labels, predicted, self.top5_hits)
        return statistics[self.spec.main_metric.name](np.arange(len(predicted)))

    def scores(self, n_resamples: int = N_RESAMPLES, seed: int = SEED) -> dict[str, Score]:
        _, predicted = self.predict()
        return classification_scores(self._val.labels, predicted, self.top5_hits, n_resamples, seed)

    def outcomes(self) -> dict[str, np.ndarray]:
        _, predicted = self.predict()
        hits = self.top5_hits
        return {"labels": self._val.labels, "predictions": predicted} | ({} if hits is None else {"top5_hits": hits})


EVALUATORS: TitleRegistry[type[EvaluationModel]] = TitleRegistry("evaluator")
"""Every declared evaluator by title, in the order they registered (the built-ins in the original tool's order)."""

E = TypeVar("E", bound=type[EvaluationModel])


def query_class_sizes(queries: np.ndarray, searched: np.ndarray) -> np.ndarray:
    """For each query label, how many images of that class the searched labels hold."""
    return np.bincount(searched, minlength=int(queries.max(initial=-1)) + 1)[queries]


def register_evaluator(evaluator: E) -> E:
    """Make an evaluator class known by its `spec.title` to `run_evaluation`, `tti-eval evaluate -e` and the
    reports; use it as a class decorator, or call it from a notebook or plugin."""
    if not (isinstance(evaluator, type) and issubclass(evaluator, EvaluationModel)):
        raise TypeError(f"{evaluator!r} is not a subclass of EvaluationModel")
    EVALUATORS.register(evaluator.spec.title, evaluator)
    return evaluator


def get_evaluator(title: str) -> type[EvaluationModel]:
    """The evaluator with this title (case-insensitive); an unknown title suggests the closest ones."""
    return EVALUATORS.get_entry(title)
