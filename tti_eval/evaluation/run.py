"""Run evaluators on cached (model, dataset) pairs and collect their scores.

Nothing here prints: problems come back as one-sentence strings and progress goes to an optional callback, so the
CLI and a notebook present the same results their own way.
"""

import functools
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np
from pydantic import BaseModel

from tti_eval.common.base import EmbeddingDefinition, Embeddings, Split
from tti_eval.common.cache import build_command, embeddings_exist, load_embeddings, load_metadata
from tti_eval.common.errors import CacheError, TTIEvalError
from tti_eval.common.vectors import check_vectors

from ._approximate import Search, approximate_neighbours, is_approximate
from ._collapse import collapse_note
from ._metrics import CONFIDENCE, N_RESAMPLES, SEED, EvaluationResult
from .base import EvaluationModel

# progress(steps done, total steps, what runs next): one step per (pair, evaluator).
ProgressCallback = Callable[[int, int, str], None]


class Skipped(NamedTuple):
    """An evaluator that could not score a pair, and why (a clause: the rest of a sentence)."""

    model: str
    dataset: str
    evaluator: str
    reason: str


class EvaluationRun(NamedTuple):
    results: list[EvaluationResult]
    problems: list[str]  # one sentence each: a skipped evaluator, a pair that could not be loaded, ...
    skipped: tuple[Skipped, ...] = ()  # evaluators that could not score a pair; also among `problems`


def evaluate_embeddings(
    train: Embeddings,
    validation: Embeddings,
    evaluators: Sequence[type[EvaluationModel]],
    *,
    num_classes: int | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    model: str = "",
    dataset: str = "",
    split: Split | str = Split.VALIDATION,
    tuning: Embeddings | None = None,
    class_names: Sequence[str] | None = None,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    per_class: bool = True,
    search: str | Search = Search.AUTO,
    on_evaluator: Callable[[int, str], None] | None = None,
) -> EvaluationRun:
    """Run `evaluators` on one pair of splits; `params` maps an evaluator's title to its parameters (a parameter it
    does not have, or a value out of range, raises `InvalidParametersError` before any work).

    `validation` is the scored split, named by `split`; when it is the test split, `tuning` (the validation split)
    goes to the evaluators that choose hyper-parameters on it. Evaluators that read nearest neighbours (wKNN, I2IR)
    share one search of the pair, sized per query for the most neighbours any of them reads, so the distances
    between the two sets are computed once. `search` is exact, approximate or auto (exact below `EXACT_LIMIT`
    multiply-adds); an approximate search marks its results and notes its recall. Classifier results carry their
    per-class figures unless `per_class` is False (their bootstrap costs seconds per result on large splits).
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
    requests = [e.spec.neighbour_request(settings[e.title()], train, validation) for e in evaluators]
    searches = [[bool(np.any(k)) for k in request] for request in requests]  # which directions each one reads
    k_val_to_train, k_train_to_val = (functools.reduce(np.maximum, (r[i] for r in requests), 0) for i in (0, 1))
    shared, search_notes = None, {}
    collapsed = collapse_note(train.images, validation.images, seed=seed)
    results: list[EvaluationResult] = []
    problems: list[str] = []
    skipped: list[Skipped] = []
    for index, (evaluator_type, reads) in enumerate(zip(evaluators, searches, strict=True)):
        title = evaluator_type.title()
        if on_evaluator is not None:
            on_evaluator(index, title)
        reason = _class_embeddings_problem(train.classes) if evaluator_type.spec.needs_class_embeddings else None
        if reason is not None:
            skipped.append(Skipped(model, dataset, title, reason))
            problems.append(f"{title} skipped for {pair}: {reason}")
            continue
        kwargs = settings[title].model_dump()
        try:
            if any(reads):
                if shared is None and approximate:
                    # an index search finds as many for every query, so the widest count
                    shared, search_notes = approximate_neighbours(
                        train.images,
                        validation.images,
                        int(np.max(k_val_to_train)),
                        int(np.max(k_train_to_val)),
                        seed=seed,
                    )
                elif shared is None:
                    shared = search_neighbours(train.images, validation.images, k_val_to_train, k_train_to_val)
                kwargs["neighbours"] = shared
            if tuning is not None and evaluator_type.spec.tunes_on_validation:
                kwargs["tuning_embeddings"] = tuning
            evaluator = evaluator_type(train, validation, num_classes=num_classes, **kwargs)
            metrics = evaluator.scores(n_resamples=n_resamples, seed=seed)
        except TTIEvalError as error:
            problems.append(f"{title} failed on {pair}: {_clause(error)}")
            continue
        searched = [
            search_notes[direction] for direction, read in enumerate(reads) if read and direction in search_notes
        ]
        result = EvaluationResult(
            model,
            dataset,
            title,
            evaluator_type.spec.main_metric,
            metrics,
            " ".join(part for part in (*evaluator.notes, *searched, collapsed) if part),
            **evaluator.outcomes(),
            split=Split(split).value,
            params=settings[title].model_dump(mode="json"),
            chosen=dict(evaluator.chosen),
            n_train=len(train.images),
            n_scored=len(validation.images),
            class_names=tuple(class_names) if class_names else None,
            approximate=bool(searched),
        )
        results.append(with_per_class(result, n_resamples, seed) if per_class else result)
    return EvaluationRun(results, problems, tuple(skipped))


def _class_embeddings_problem(classes: np.ndarray | None) -> str | None:
    """Why class embeddings cannot be scored (a clause), or None: a zero-shot score from NaN vectors would be a
    number that means nothing, so the evaluator is skipped and says so instead."""
    if classes is None:
        return "its train embeddings have no class embeddings."
    try:
        check_vectors(classes, "class embeddings")
    except TTIEvalError as error:
        return _clause(error)
    return None


def with_per_class(
    result: EvaluationResult, n_resamples: int = N_RESAMPLES, seed: int = SEED, confidence: float = CONFIDENCE
) -> EvaluationResult:
    """`result` with its per-class figures when it is a classifier's (it has predictions), else unchanged."""
    if result.predictions is None or result.labels is None:
        return result
    from tti_eval.comparison.compare import per_class_results  # comparison imports this package

    (found,) = per_class_results(
        result.labels, [result.predictions], [result.model], result.class_names, n_resamples, seed, confidence
    )
    return replace(result, per_class=found)


def run_evaluation(
    evaluators: Sequence[type[EvaluationModel]],
    definitions: Sequence[EmbeddingDefinition],
    *,
    params: dict[str, dict[str, Any]] | None = None,
    split: Split | str = Split.VALIDATION,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
    per_class: bool = True,
    search: str | Search = Search.AUTO,
    progress: ProgressCallback | None = None,
) -> EvaluationRun:
    """Evaluate every cached pair in `definitions` with every evaluator: train fits, `split` (validation, the
    original's protocol, or test) is scored; with test, the validation split tunes what an evaluator tunes.

    The number of classes comes from the class names stored with the cache when there are any, so classes absent
    from both splits still count; caches of the original tool fall back to the labels. A pair that cannot be
    loaded is reported in `problems` and the others still run. Each result keeps its splits' stored fingerprints.
    """
    _settings(evaluators, params)  # a bad parameter fails before any pair is loaded
    split = Split(split)
    if split == Split.TRAIN:
        raise TTIEvalError("The train split is what evaluators fit; score the validation or the test split.")
    read = [Split.TRAIN, Split.VALIDATION] + ([Split.TEST] if split == Split.TEST else [])
    results: list[EvaluationResult] = []
    problems: list[str] = []
    skipped: list[Skipped] = []
    total = len(definitions) * len(evaluators)
    for position, definition in enumerate(definitions):
        try:
            splits = {s: load_embeddings(definition, s) for s in _require(definition, read)}
            metadata = {s: load_metadata(definition, s) for s in read}
        except TTIEvalError as error:
            problems.append(str(error))
            continue
        class_names = metadata[Split.TRAIN].get("class_names")
        run = evaluate_embeddings(
            splits[Split.TRAIN],
            splits[split],
            evaluators,
            num_classes=len(class_names) if class_names else None,
            params=params,
            model=definition.model,
            dataset=definition.dataset,
            split=split,
            tuning=splits[Split.VALIDATION] if split == Split.TEST else None,
            class_names=class_names,
            n_resamples=n_resamples,
            seed=seed,
            search=search,
            per_class=per_class,
            on_evaluator=_step_reporter(progress, position * len(evaluators), total, definition),
        )
        fingerprints = {s.value: metadata[s].get("fingerprint") for s in read}
        results.extend(replace(result, fingerprints=fingerprints) for result in run.results)
        problems.extend(run.problems)
        skipped.extend(run.skipped)
    if progress is not None:
        progress(total, total, "done")
    return EvaluationRun(results, problems, tuple(skipped))


def _require(definition: EmbeddingDefinition, splits: Sequence[Split]) -> Sequence[Split]:
    """`splits`, or one sentence naming the build command for the first that is not cached."""
    for split in splits:
        if not embeddings_exist(definition, split):
            raise CacheError(
                f"{definition} has no {split.value} embeddings; run `{build_command(definition)} --split "
                f"{split.value}` first."
            )
    return splits


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
