"""Which model/dataset pairs a command works on: `-md` pairs, the cross product of `-m`/`-d` patterns, or a suite
file. One function serves every command that takes a selection (build, evaluate, compare), so they read it alike."""

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tti_eval.common.errors import TTIEvalError
from tti_eval.common.split import Split

if TYPE_CHECKING:
    from tti_eval.common import EmbeddingDefinition
    from tti_eval.suite import Suite

ModelDatasetOption = Annotated[
    list[str] | None,
    typer.Option("--model-dataset", "-md", help="A MODEL/DATASET pair, e.g. clip/plants. Repeat for more pairs."),
]
ModelOption = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        "-m",
        help="A model title or shell pattern (any letter case), e.g. -m 'siglip*'; with --dataset, every model "
        "times every dataset. Repeat for more.",
    ),
]
DatasetOption = Annotated[
    list[str] | None,
    typer.Option("--dataset", "-d", help="A dataset title or shell pattern, e.g. -d '*'. Repeat for more."),
]
SuiteOption = Annotated[
    Path | None,
    typer.Option(
        "--suite",
        help="A suite file (JSON, see sources/suite-schema.json) naming models, datasets, evaluators and splits.",
        dir_okay=False,
    ),
]


@dataclass(frozen=True)
class Selection:
    """What the command line names: `-md` pairs, `-m`/`-d` patterns and a suite file (all optional)."""

    model_dataset: Sequence[str] | None = None
    models: Sequence[str] | None = None
    datasets: Sequence[str] | None = None
    suite_path: Path | None = None

    def suite(self) -> "Suite | None":
        from tti_eval.suite import Suite

        return Suite.read(self.suite_path) if self.suite_path else None

    def pairs(self, suite: "Suite | None", cached_splits: Sequence[Split] = ()) -> "list[EmbeddingDefinition] | None":
        return named_pairs(self.model_dataset, self.models, self.datasets, suite=suite, cached_splits=cached_splits)


def match_titles(patterns: Sequence[str], known: Iterable[str], kind: str) -> list[str]:
    """The known titles each pattern names, in the patterns' order: a shell pattern (`siglip*`, `digits-?`) or a
    title, both in any letter case. A pattern that matches nothing is an error that suggests close titles."""
    from tti_eval.common.title_registry import did_you_mean

    known = list(dict.fromkeys(known))
    matched: list[str] = []
    for pattern in patterns:
        hits = [title for title in known if fnmatch.fnmatchcase(title.lower(), pattern.lower())]
        if not hits:
            hint = did_you_mean(pattern, known) or f"Run `tti-eval list --all` to see every known {kind}."
            raise TTIEvalError(f"No {kind} matches '{pattern}'. {hint}")
        matched += [title for title in hits if title not in matched]
    return matched


def _cached_pairs(cached_splits: Sequence[Split]) -> "list[EmbeddingDefinition]":
    from tti_eval.common.cache import list_cached

    return (
        [pair for pair, splits in list_cached().items() if set(cached_splits) <= set(splits)] if cached_splits else []
    )


def parse_pairs(texts: Sequence[str], cached_splits: Sequence[Split] = ()) -> "list[EmbeddingDefinition]":
    """`MODEL/DATASET` strings → pairs whose model and dataset are known (unknown titles suggest close ones).

    Commands that only read the cache pass the splits they read: a pair with those splits cached needs no
    definition (a cache written by the original tool, or one whose definition has since been removed)."""
    from tti_eval.common import EmbeddingDefinition
    from tti_eval.common.cache import embeddings_exist
    from tti_eval.dataset import DatasetProvider
    from tti_eval.model import ModelProvider

    pairs = []
    for text in texts:
        pair = EmbeddingDefinition.parse(text)
        if not (cached_splits and all(embeddings_exist(pair, s) for s in cached_splits)):
            for registry, title in ((ModelProvider.registry, pair.model), (DatasetProvider.registry, pair.dataset)):
                if title not in registry.titles():
                    raise TTIEvalError(registry.unknown_title_message(title))
        if pair not in pairs:
            pairs.append(pair)
    return pairs


def named_pairs(
    model_dataset: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
    *,
    suite: "Suite | None" = None,
    cached_splits: Sequence[Split] = (),
) -> "list[EmbeddingDefinition] | None":
    """The pairs named on the command line: `-md` pairs, then every `-m` model times every `-d` dataset, then a
    suite's models times its datasets; None when nothing is named (the command offers a picker).

    Commands that read the cache pass the splits they read, so cached pairs without a definition can be named."""
    if bool(models) != bool(datasets):
        given, missing = ("--model", "--dataset") if models else ("--dataset", "--model")
        raise TTIEvalError(
            f"{given} needs {missing} too (they select every model times every dataset); use {missing} '*' for all."
        )
    if not (model_dataset or models or suite):
        return None
    from tti_eval.common import EmbeddingDefinition
    from tti_eval.dataset import DatasetProvider
    from tti_eval.model import ModelProvider

    pairs = parse_pairs(model_dataset or [], cached_splits)
    cached = _cached_pairs(cached_splits)
    known_models = ModelProvider.registry.titles() + [p.model for p in cached]
    known_datasets = DatasetProvider.registry.titles() + [p.dataset for p in cached]
    for model_patterns, dataset_patterns in ((models, datasets), *([(suite.models, suite.datasets)] if suite else [])):
        if not model_patterns:
            continue
        chosen = [
            EmbeddingDefinition(model=m, dataset=d)
            for m in match_titles(model_patterns, known_models, "model")
            for d in match_titles(dataset_patterns, known_datasets, "dataset")
        ]
        if cached_splits:
            # Reading the cache, patterns stand for the pairs built so far; a pair named by both titles is kept, so
            # that an unbuilt one is reported with the command that builds it.
            titles = {pattern.lower() for pattern in (*model_patterns, *dataset_patterns)}
            chosen = [p for p in chosen if p in cached or {p.model.lower(), p.dataset.lower()} <= titles]
        pairs += chosen
    return list(dict.fromkeys(pairs))
