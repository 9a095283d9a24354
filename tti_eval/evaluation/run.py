"""Run evaluators on cached (model, dataset) pairs and collect their scores.

Nothing here prints: problems come back as one-sentence strings and progress goes to an optional callback, so the
CLI and a notebook present the same results their own way.
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from pydantic import BaseModel

from tti_eval.common.base import EmbeddingDefinition, Embeddings, Split
from tti_eval.common.cache import load_embeddings, load_metadata
from tti_eval.common.errors import TTIEvalError
from tti_eval.common.vectors import check_vectors

from ._approximate import Search, approximate_neighbours, is_approximate
from ._collapse import collapse_note
from ._metrics import N_RESAMPLES, SEED, EvaluationResult
from .base import EvaluationModel

# progress(steps done, total steps, what runs next): one step per (pair, evaluator).
ProgressCallback = Callable[[int, int, str], None]


class EvaluationRun(NamedTuple):
    results: list[EvaluationResult]
    problems: list[str]  # one sentence each: a skipped evaluator, a pair that could not be loaded, ...


def evaluate_embeddings(
    train: Embeddings,
    validation: Embeddings,
    evaluators: Sequence[type[EvaluationModel]],
    *,
    num_classes: int | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    model: str = "",
    dataset: str = "",
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    search: str | Search = Search.AUTO,
    on_evaluator: Callable[[int, str], None] | None = None,
) -> EvaluationRun:
    """Run `evaluators` on one pair of splits; `params` maps an evaluator's title to its parameters (a parameter it
    does not have, or a value out of range, raises `InvalidParametersError` before any work).

    Evaluators that read nearest neighbours (wKNN, I2IR) share one search of the pair, sized for the largest k
    each direction needs, so the distances between the two sets are computed once. `search` is exact, approximate
    or auto (exact below `EXACT_LIMIT` multiply-adds); an approximate search marks its results and notes its recall.
    """
    from ._neighbours import search_neighbours  # imports faiss

    approximate = is_approximate(search, len(train.images), len(validation.images), train.images.shape[-1])
    settings = _settings(evaluators, params)
    pair = f"{model}/{dataset}" if model or dataset else "these embeddings"
    try:  # report bad vectors once for the pair, rather than as one identical complaint per evaluator
        check_vectors(train.images, "train images")
        check_vectors(validation.images, "validation images")
    except TTIEvalError as error:
        return EvaluationRun([], [f"{pair} was not evaluated: {_clause(error)}"])
    requests = [e.spec.neighbour_request(settings[e.title()]) for e in evaluators]
    k_val_to_train, k_train_to_val = (max((r[i] for r in requests), default=0) for i in (0, 1))
    shared, search_notes = None, {}
    collapsed = collapse_note(train.images, validation.images, seed=seed)
    results: list[EvaluationResult] = []
    problems: list[str] = []
    for index, (evaluator_type, request) in enumerate(zip(evaluators, requests, strict=True)):
        title = evaluator_type.title()
        if on_evaluator is not None:
            on_evaluator(index, title)
        if evaluator_type.spec.needs_class_embeddings and train.classes is None:
            problems.append(f"{title} skipped for {pair}: its train embeddings have no class embeddings.")
            continue
        kwargs = settings[title].model_dump()
        try:
            if any(request):
                if shared is None and approximate:
                    shared, search_notes = approximate_neighbours(
                        train.images, validation.images, k_val_to_train, k_train_to_val, seed=seed
                    )
                elif shared is None:
                    shared = search_neighbours(train.images, validation.images, k_val_to_train, k_train_to_val)
                kwargs["neighbours"] = shared
            evaluator = evaluator_type(train, validation, num_classes=num_classes, **kwargs)
            metrics = evaluator.scores(n_resamples=n_resamples, seed=seed)
        except TTIEvalError as error:
            problems.append(f"{title} failed on {pair}: {_clause(error)}")
            continue
        searched = [search_notes[direction] for direction, k in enumerate(request) if k and direction in search_notes]
        note = " ".join(part for part in (*evaluator.notes, *searched, collapsed) if part)
        main = evaluator_type.spec.main_metric
        results.append(
            EvaluationResult(
                model, dataset, title, main, metrics, note, approximate=bool(searched), **evaluator.outcomes()
            )
        )
    return EvaluationRun(results, problems)


def run_evaluation(
    evaluators: Sequence[type[EvaluationModel]],
    definitions: Sequence[EmbeddingDefinition],
    *,
    params: dict[str, dict[str, Any]] | None = None,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    search: str | Search = Search.AUTO,
    progress: ProgressCallback | None = None,
) -> EvaluationRun:
    """Evaluate every cached pair in `definitions` with every evaluator (train fits, validation scores).

    The number of classes comes from the class names stored with the cache when there are any, so classes absent
    from both splits still count; caches of the original tool fall back to the labels. A pair that cannot be
    loaded is reported in `problems` and the others still run.
    """
    _settings(evaluators, params)  # a bad parameter fails before any pair is loaded
    results: list[EvaluationResult] = []
    problems: list[str] = []
    total = len(definitions) * len(evaluators)
    for position, definition in enumerate(definitions):
        try:
            train = load_embeddings(definition, Split.TRAIN)
            validation = load_embeddings(definition, Split.VALIDATION)
            class_names = load_metadata(definition, Split.TRAIN).get("class_names")
        except TTIEvalError as error:
            problems.append(str(error))
            continue
        run = evaluate_embeddings(
            train,
            validation,
            evaluators,
            num_classes=len(class_names) if class_names else None,
            params=params,
            model=definition.model,
            dataset=definition.dataset,
            n_resamples=n_resamples,
            seed=seed,
            search=search,
            on_evaluator=_step_reporter(progress, position * len(evaluators), total, definition),
        )
        results.extend(run.results)
        problems.extend(run.problems)
    if progress is not None:
        progress(total, total, "done")
    return EvaluationRun(results, problems)


def _settings(
    evaluators: Sequence[type[EvaluationModel]], params: dict[str, dict[str, Any]] | None
) -> dict[str, BaseModel]:
    """Each evaluator's validated parameters by title: its declared defaults, overridden by `params`."""
    given = {title.lower(): values for title, values in (params or {}).items()}
    return {e.title(): e.spec.parse_params(given.get(e.title().lower())) for e in evaluators}


def _clause(error: Exception) -> str:
    """An error's sentence, continued after a colon."""
    text = str(error)
    return text[:1].lower() + text[1:]


def _step_reporter(
    progress: ProgressCallback | None, done: int, total: int, definition: EmbeddingDefinition
) -> Callable[[int, str], None] | None:
    if progress is None:
        return None
    return lambda index, title: progress(done + index, total, f"{title} on {definition}")
