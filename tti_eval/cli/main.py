"""`tti-eval`: build, evaluate, animate, list.

A thin layer over the Python API. Everything beyond typer and rich (numpy, pydantic, torch, transformers, faiss, umap,
InquirerPy) is imported inside the commands that need it, so `--help` and `list` answer at once; the help texts that
describe built-in evaluators and reductions come from `help_text.py` for the same reason.
"""

from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, NamedTuple

import typer

from tti_eval.common.errors import TTIEvalError
from tti_eval.common.split import DEFAULT_SPLITS, Split

from . import console as console_module
from .console import (
    configure_logging,
    console,
    fits,
    interrupt_exits_130_from_now_on,
    progress_display,
    silence_library_progress_bars,
    stacked,
    titled,
    user_errors,
    warn,
)
from .help_text import ANIMATION_FRAMES, DEFAULT_REDUCTION, EVALUATOR_DESCRIPTIONS, LINEAR_PROBE_DEFAULTS, REDUCTIONS
from .selection import (
    DatasetOption,
    ModelDatasetOption,
    ModelOption,
    Selection,
    SuiteOption,
    parse_pairs,
)

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from tti_eval.common import EmbeddingDefinition
    from tti_eval.common.progress import Display, Task
    from tti_eval.comparison.results import PerClassResult
    from tti_eval.compute import BuildProgress, PairBuild
    from tti_eval.evaluation import EvaluationResult, EvaluationRun
    from tti_eval.provenance import SplitState
    from tti_eval.suite import Suite

app = typer.Typer(
    name="tti-eval",
    help="Evaluate text-image embedding models on your own image-classification data.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(asked: bool) -> None:
    if asked:
        from tti_eval import __version__

        console.print(f"tti-eval {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback of any error instead of its one-line message.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Evaluate text-image embedding models on your own image-classification data."""
    configure_logging()
    silence_library_progress_bars()
    console_module.DEBUG = debug


def _report_definition_problems() -> None:
    from tti_eval.dataset import DatasetProvider
    from tti_eval.model import ModelProvider

    # dict.fromkeys: a TTI_EVAL_SOURCES_PATH problem is found by both registries but said once
    for problem in dict.fromkeys([*ModelProvider.registry.problems, *DatasetProvider.registry.problems]):
        warn(problem)


def all_pairs() -> "list[EmbeddingDefinition]":
    from tti_eval.common import EmbeddingDefinition
    from tti_eval.dataset import DatasetProvider
    from tti_eval.model import ModelProvider

    models, datasets = ModelProvider.list_model_titles(), DatasetProvider.list_dataset_titles()
    return [EmbeddingDefinition(model=m, dataset=d) for m in models for d in datasets]


def _pick_pairs_to_build(include_existing: bool, by_dataset: bool, splits: list[Split]) -> "list[EmbeddingDefinition]":
    from tti_eval.common import EmbeddingDefinition
    from tti_eval.common.cache import embeddings_exist
    from tti_eval.dataset import DatasetProvider
    from tti_eval.model import ModelProvider

    from .pickers import pick_one, pick_pairs, pick_some, require_terminal

    require_terminal("pairs")

    def is_new(pair: "EmbeddingDefinition") -> bool:
        return include_existing or not all(embeddings_exist(pair, s) for s in splits)

    if by_dataset:
        dataset = pick_one(DatasetProvider.list_dataset_titles(), "Pick a dataset")
        models = ModelProvider.list_model_titles()
        new = [m for m in models if is_new(EmbeddingDefinition(model=m, dataset=dataset))]
        picked = pick_some(new, f"Pick models for {dataset}", "MODEL", hidden=len(models) - len(new))
        return [EmbeddingDefinition(model=m, dataset=dataset) for m in picked]
    candidates = all_pairs()
    new = [p for p in candidates if is_new(p)]
    return pick_pairs(new, "Pick model/dataset pairs to build", hidden=len(candidates) - len(new))


class BuildEngine(StrEnum):
    LOCAL = "local"
    RAY = "ray"


@app.command()
@user_errors
def build(
    model_dataset: ModelDatasetOption = None,
    model: ModelOption = None,
    dataset: DatasetOption = None,
    suite: SuiteOption = None,
    include_existing: Annotated[
        bool, typer.Option("--include-existing", help="Also offer pairs that are already built in the picker.")
    ] = False,
    by_dataset: Annotated[bool, typer.Option("--by-dataset", help="In the picker, choose the dataset first.")] = False,
    split: Annotated[
        list[Split] | None,
        typer.Option(
            "--split",
            case_sensitive=False,
            help="train, validation or test; repeat for more. Default: train, validation (or the suite's splits).",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 32,
    num_workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Workers that decode and preprocess images. Default on a CPU: as many as the first batch's "
            "decoding and forward times call for; on a GPU: all cores but one (at most 8).",
        ),
    ] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:N or mps. Default: the best available.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Rebuild splits that are already cached.")] = False,
    skip_bad_images: Annotated[
        bool,
        typer.Option(
            "--skip-bad-images",
            help="Leave out images that cannot be read (listed at the end and in the metadata) instead of stopping.",
        ),
    ] = False,
    draft_decode: Annotated[
        bool,
        typer.Option(
            "--draft-decode",
            help="Decode JPEGs at reduced scale and shrink images to the model's input with torch: 2-5 times faster "
            "preprocessing of photos, with slightly different embeddings.",
        ),
    ] = False,
    engine: Annotated[
        BuildEngine, typer.Option(help="local: this process. ray: a Ray cluster (`pip install -e '.[ray]'`).")
    ] = BuildEngine.LOCAL,
    address: Annotated[
        str | None, typer.Option(help="Ray: the cluster to join, e.g. ray://head:10001. Default: a local Ray.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Ray: model actors. Default: one per GPU, or one without GPUs.")
    ] = None,
    gpus_per_worker: Annotated[
        float | None, typer.Option(min=0, help="Ray: GPUs per model actor (0: on CPU). Default: 1 with GPUs.")
    ] = None,
) -> None:
    """Compute and cache image and class embeddings for model/dataset pairs."""
    ray_options = {"address": address, "workers": workers, "gpus_per_worker": gpus_per_worker}
    if engine is BuildEngine.LOCAL and any(value is not None for value in ray_options.values()):
        raise TTIEvalError("--address, --workers and --gpus-per-worker apply to --engine ray only.")
    if engine is BuildEngine.RAY and (device is not None or num_workers is not None or draft_decode):
        raise TTIEvalError("--device, --num-workers and --draft-decode apply to --engine local only.")
    selection = Selection(model_dataset, model, dataset, suite)
    suite_ = selection.suite()
    splits = list(dict.fromkeys(split or (suite_.splits if suite_ else None) or DEFAULT_SPLITS))
    if Split.ALL in splits:  # nothing reads a combined split: each split is built and evaluated on its own
        raise TTIEvalError("Build splits one by one: --split train --split validation (add --split test if needed).")
    if device is not None:
        from tti_eval.model.base import resolve_device

        resolve_device(device)  # a device this machine lacks is one sentence before any pair is picked or loaded
    _report_definition_problems()
    pairs = selection.pairs(suite_)
    if pairs is None:
        pairs = _pick_pairs_to_build(include_existing, by_dataset, splits)
    if not pairs:
        console.print("Nothing to build.")
        return
    if not overwrite:  # pairs that need no dataset or model are answered without importing torch
        from tti_eval.provenance import pairs_kept_as_cached

        kept = pairs_kept_as_cached(pairs, splits, draft_decode)
        for pair in kept:
            _print_splits(console_module.err_console, pair, dict.fromkeys(splits, False))  # where built ones go
        pairs = [pair for pair in pairs if pair not in kept]
        if not pairs:
            return
    from tti_eval.compute import build_pairs

    skipped: list[tuple[str, str]] = []
    with progress_display() as display:
        draw, print_pair = _build_drawing(display)
        run = build_pairs(
            pairs,
            splits,
            overwrite=overwrite,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            progress=draw,
            on_pair=print_pair,
            on_note=lambda pair, split, text: display.print(
                f"[dim]•[/] {pair} ({split.value}) {text}", highlight=False
            ),
            skip_bad_images=skip_bad_images,
            on_skip=lambda image, reason: skipped.append((image, reason)),
            draft_decode=draft_decode,
            reraise=console_module.DEBUG,
            engine=engine.value,
            on_ray_start=lambda: display.print(f"Building on Ray ({address or 'a local cluster'}) …", highlight=False),
            **ray_options,
        )
    if skipped:
        console.print(f"[yellow]Skipped {len(skipped)} unreadable images[/] (recorded in each split's metadata):")
        for image, reason in skipped:
            console.print(f"  {image} ({reason})", highlight=False, markup=False)
    if run.failed:
        raise typer.Exit(1)


def _build_drawing(display: "Display") -> tuple[Callable[["BuildProgress"], None], Callable[["PairBuild | str"], None]]:
    """What `build` hands `build_pairs`: a task per (pair, split) on the command's display, and each pair's ✓/✗ line
    (which also ends the tasks of a pair that failed part-way)."""
    tasks: dict[tuple, Task] = {}

    def draw(step: "BuildProgress") -> None:
        if step.split is None:
            display.print(f"Loading model [bold]{step.pair.model}[/] …", highlight=False)
            return
        key = (step.pair, step.split)
        if key not in tasks:
            # images a previous run embedded count as done, not towards this run's speed
            tasks[key] = display.task(f"{step.pair} ({step.split.value})", step.total, completed=step.resumed)
        tasks[key].update(step.done)
        if step.done >= step.total:
            display.finish(tasks.pop(key))

    def print_pair(outcome: "PairBuild | str") -> None:
        if isinstance(outcome, str):
            for key in list(tasks):  # pairs build one after another: what is still open is this pair's
                display.drop(tasks.pop(key))
            display.print(f"[bold red]✗[/] {outcome}", highlight=False)
            return
        _print_splits(display, outcome.pair, outcome.built)

    return draw, print_pair


def _print_splits(out: "Console | Display", pair: "EmbeddingDefinition", built: dict[Split, bool]) -> None:
    for split, now in built.items():
        status = "[green]built[/]" if now else "[dim]already cached[/]"
        out.print(f"[green]✓[/] {pair} ({split.value}) {status}", highlight=False)


def cached_pairs(*splits: Split) -> "list[EmbeddingDefinition]":
    """Pairs whose train and validation embeddings are cached (or, given splits, those splits)."""
    from tti_eval.common.cache import list_cached

    wanted = set(splits or DEFAULT_SPLITS)
    return [pair for pair, splits in list_cached().items() if wanted <= set(splits)]


def _cross_validate_help(defaults: dict) -> str:
    grid = defaults["C_grid"]
    return (
        f"Linear probe: choose C by cross-validation on the train split ({min(grid):g} to {max(grid):g}) instead of "
        f"the original tool's C = {defaults['C']:g}."
    )


EvaluatorOption = Annotated[
    list[str] | None,
    typer.Option(
        "--evaluator",
        "-e",
        help="; ".join(f"{title}: {description}" for title, description in EVALUATOR_DESCRIPTIONS.items())
        + ". Repeat for more. Default: all.",
    ),
]
AllOption = Annotated[bool, typer.Option("--all", "-a", help="Every cached pair.")]

SearchOption = Annotated[
    str,
    typer.Option(
        "--search",
        help="Neighbour search for wKNN and I2IR: exact, approximate (a faiss IVF index; the note gives its "
        "measured recall) or auto (exact up to 1e12 = n_train × n_val × dim).",
    ),
]


class ScoredSplit(StrEnum):
    """The splits a scoring command can score (train is always the one fitted or searched)."""

    VALIDATION = "validation"
    TEST = "test"


SplitOption = Annotated[
    ScoredSplit,
    typer.Option(
        "--split",
        case_sensitive=False,
        help="The split to score: validation (the original tool's protocol) or test (held out: the linear probe "
        "chooses C on validation and refits on train + validation).",
    ),
]


def scored_splits(split: ScoredSplit) -> tuple[Split, ...]:
    """The cached splits a run that scores `split` reads: train always, validation always (with test it tunes)."""
    return (Split.TRAIN, Split.VALIDATION) + ((Split.TEST,) if split == ScoredSplit.TEST else ())


def select_evaluators(titles: list[str] | None) -> list:
    # Titles are looked up (in any letter case) when the command runs, so an evaluator a plugin registers after this
    # module loaded is still found, and an unknown one gets the registry's suggestion.
    from tti_eval.evaluation import EVALUATORS, get_evaluator

    return list(dict.fromkeys([get_evaluator(title) for title in titles or []] or list(EVALUATORS.values())))


class Work(NamedTuple):
    """What `evaluate` and `compare` run, all checked before any work starts."""

    evaluators: list
    search: str
    pairs: "list[EmbeddingDefinition]"
    missing: bool  # some named pair lacked a split (its sentence is printed)
    params: dict[str, dict]  # evaluator parameters by title (a suite's, with --cross-validate merged in)


def select_work(
    evaluator: list[str] | None,
    search: str,
    selection: Selection,
    all_: bool,
    split: "ScoredSplit",
    verb: str,
    cross_validate: bool = False,
) -> Work:
    """The evaluators (-e, else the suite's, else all), the search mode, `select_pairs`' pairs with all splits that
    scoring `split` reads, and the evaluator parameters."""
    from tti_eval.evaluation import LinearProbeClassifier
    from tti_eval.evaluation._approximate import parse_search

    suite = selection.suite()
    evaluators = select_evaluators(evaluator or (suite.evaluators if suite else None))
    search_mode = parse_search(search)
    params = dict(suite.params) if suite else {}
    if cross_validate:  # merged into the suite's probe parameters, whose key may be in any letter case
        probe = LinearProbeClassifier.title()
        key = next((k for k in params if k.lower() == probe.lower()), probe)
        params[key] = {**params.get(key, {}), "cross_validate": True}
    pairs, missing = select_pairs(selection, suite, all_, scored_splits(split), verb)
    return Work(evaluators, search_mode, pairs, missing, params)


def select_pairs(
    selection: Selection, suite: "Suite | None", all_: bool, splits: Sequence[Split], verb: str
) -> "tuple[list[EmbeddingDefinition], bool]":
    """The pairs a scoring command works on (--all, named pairs or a picker) that have all of `splits` cached, and
    whether some named pair lacked one (each such pair gets a sentence naming the command that builds it). Stale
    splits are warned about. Exits when nothing is left."""
    from tti_eval.common.cache import build_command, embeddings_exist

    named = selection.pairs(suite, splits)
    if all_ and named is not None:
        raise TTIEvalError("Give either --all or named pairs (--model-dataset, --model/--dataset, --suite), not both.")
    if all_:
        pairs = cached_pairs()
    elif named is not None:
        pairs = named
    else:
        from .pickers import pick_pairs, require_terminal

        require_terminal("pairs")
        pairs = pick_pairs(cached_pairs(), f"Pick model/dataset pairs to {verb}")
    missing = {p: [s for s in splits if not embeddings_exist(p, s)] for p in pairs}
    missing = {p: absent for p, absent in missing.items() if absent}
    for pair, absent in missing.items():
        names = " and ".join(s.value for s in absent)
        options = "".join(f" --split {s.value}" for s in absent) if Split.TEST in absent else ""
        console.print(
            f"[bold red]✗[/] {pair} has no {names} embeddings; run `{build_command(pair)}{options}` first.",
            highlight=False,
        )
    pairs = [p for p in pairs if p not in missing]
    _warn_stale(pairs, splits)
    if not pairs:
        if not missing:
            console.print(f"No cached pairs to {verb}; build some first with `tti-eval build`.")
        raise typer.Exit(1 if missing else 0)
    return pairs, bool(missing)


def run_with_progress(
    evaluators: list,
    pairs: "list[EmbeddingDefinition]",
    split: ScoredSplit,
    search: str,
    params: dict | None = None,
    per_class: bool = True,
) -> "EvaluationRun":
    """`run_evaluation` behind the command's progress display; its problems are printed as warnings."""
    from tti_eval.evaluation import run_evaluation

    with progress_display() as display:
        task = display.task("Evaluating", len(pairs) * len(evaluators), unit="evaluator runs")
        run = run_evaluation(
            evaluators,
            pairs,
            params=params,
            split=split.value,
            search=search,
            per_class=per_class,
            progress=lambda done, total, what: task.update(done, note=what if done < total else ""),
        )
        display.finish(task)
    for problem in run.problems:
        warn(problem)
    return run


@app.command()
@user_errors
def evaluate(
    model_dataset: ModelDatasetOption = None,
    model: ModelOption = None,
    dataset: DatasetOption = None,
    suite: SuiteOption = None,
    all_: AllOption = False,
    save: Annotated[
        bool, typer.Option("--save", "-s", help="Write the scores to a CSV and a JSON in the output folder.")
    ] = False,
    evaluator: EvaluatorOption = None,
    plot: Annotated[
        bool,
        typer.Option(
            "--plot", help="Save a bar chart PNG per evaluator, and a confusion matrix per classifier result."
        ),
    ] = False,
    cross_validate: Annotated[
        bool,
        typer.Option("--cross-validate", help=_cross_validate_help(LINEAR_PROBE_DEFAULTS)),
    ] = False,
    split: SplitOption = ScoredSplit.VALIDATION,
    per_class: Annotated[
        bool, typer.Option("--per-class", help="Also print each classifier's recall per class, models side by side.")
    ] = False,
    search: SearchOption = "auto",
) -> None:
    """Score cached embeddings with every evaluator (or those chosen with -e), with 95 % bootstrap intervals."""
    selection = Selection(model_dataset, model, dataset, suite)
    evaluators, search_mode, pairs, missing, params = select_work(
        evaluator, search, selection, all_, split, "evaluate", cross_validate
    )
    if save or plot:  # the scores of a long run must not end in a folder they cannot be written to
        from tti_eval.common.atomic import check_writable
        from tti_eval.evaluation.report import evaluation_csv_path

        check_writable(evaluation_csv_path().parent, "the scores")
    # Per-class figures cost a bootstrap per classifier result: only when they are shown, saved or plotted.
    run = run_with_progress(evaluators, pairs, split, search_mode, params, per_class=per_class or save or plot)
    for title in (e.title() for e in evaluators):
        results = [r for r in run.results if r.evaluator == title]
        if results:
            console.print(scores_table(title, results))
            if per_class:
                for table in per_class_tables(results):
                    console.print(table)

    if (save or plot) and run.results:
        from tti_eval.evaluation.report import evaluation_csv_path, write_csv

        csv_path = evaluation_csv_path()
        if save:
            from tti_eval.evaluation.records import write_json

            console.print(
                f"Saved the scores to {write_csv(run.results, csv_path, run.skipped)}", highlight=False, soft_wrap=True
            )
            json_path = write_json(run.results, csv_path.with_suffix(".json"), skipped=run.skipped)
            console.print(f"Saved every figure and its provenance to {json_path}", highlight=False, soft_wrap=True)
        if plot:
            _plot(run.results, csv_path)
    if missing or run.problems:
        raise typer.Exit(1)  # some pair, or some evaluator on a pair, was not evaluated; its sentence is above


def _plot(results: "Sequence[EvaluationResult]", csv_path) -> None:
    from tti_eval.plotting.confusion import confusion_title, plot_confusion
    from tti_eval.plotting.scores import plot_scores

    for title in dict.fromkeys(r.evaluator for r in results):
        path = plot_scores(results, title, csv_path.with_name(f"{csv_path.stem}_{title}.png"))
        console.print(f"Saved the {title} chart to {path}", highlight=False, soft_wrap=True)
    written = []
    for r in (r for r in results if r.per_class is not None):
        names = [c.name for c in r.per_class.classes]
        title = confusion_title(
            r.model, r.dataset, r.evaluator, r.main_metric.label, r.split, r.score.value, r.n_scored
        )
        name = f"{csv_path.stem}_{r.evaluator}_{r.model}_{r.dataset}_confusion.png"
        written.append(plot_confusion(r.per_class.confusion_matrix, names, title, csv_path.with_name(name)))
    if written:
        console.print(
            f"Saved {len(written)} confusion matrices ({csv_path.stem}_<evaluator>_<model>_<dataset>_confusion.png) "
            f"to {csv_path.parent}",
            highlight=False,
            soft_wrap=True,  # a path broken across lines cannot be copied
        )


def per_class_table(title: str, per_class: "Sequence[PerClassResult]", width: int | None = None) -> "RenderableType":
    """Classes x models: recall [95 % interval], marked where it lies entirely below another model's; each interval
    under its recall when the table would not fit `width` (the terminal's by default) otherwise."""
    from rich.table import Table

    from tti_eval.comparison.writers import BELOW, per_class_rows

    def table(header: list[str], rows: list[list[str]]) -> Table:
        table = Table()
        for k, column in enumerate(header):
            table.add_column(column, justify="left" if k == 0 else "right", no_wrap=k > 0)
        for row in rows:
            table.add_row(*row)
        return table

    header, rows = per_class_rows(list(per_class))
    chosen = table(header, rows)
    if not fits(chosen, width or console.width):
        chosen = table(header, [row[:2] + stacked(row[2:]) for row in rows])
    below = f"{BELOW}: this model's recall interval lies entirely below another model's for the class."
    return titled(
        chosen, f"{title}: recall per class [dim](95 % interval in brackets)[/]", below if len(per_class) > 1 else ""
    )


def per_class_tables(results: "Sequence[EvaluationResult]") -> "list[RenderableType]":
    """One per-class table per dataset of one evaluator's classifier results."""
    tables = []
    for dataset in dict.fromkeys(r.dataset for r in results):
        found = [r.per_class for r in results if r.dataset == dataset and r.per_class is not None]
        if found:
            tables.append(per_class_table(f"{results[0].evaluator} on {dataset}", found))
    return tables


def _warn_stale(pairs: "Sequence[EmbeddingDefinition]", splits: Sequence[Split]) -> None:
    from tti_eval.provenance import stale_warnings

    for message in stale_warnings(pairs, splits):
        warn(message)


def scores_table(title: str, results: "Sequence[EvaluationResult]", width: int | None = None) -> "RenderableType":
    """Rows models, columns datasets: the main metric to 4 decimals with its 95 % interval beside it. The title names
    the metric and the split, each dataset its number of scored images. Model names are never truncated: when the
    table is wider than `width` (the terminal's by default), datasets become the rows if there are more of them than
    models, and if it is still too wide each interval goes under its score."""
    from rich.table import Table

    from tti_eval.evaluation._metrics import images_scored, scored_on

    datasets = list(dict.fromkeys(r.dataset for r in results))
    models = list(dict.fromkeys(r.model for r in results))
    cells = {(r.model, r.dataset): r for r in results}
    shows = scored_on(results[0].main_metric.label, (r.split for r in results))
    marked = "≈ approximate search (see the note), " if any(r.approximate for r in results) else ""
    table = Table()

    def scored(dataset: str, between: str = "\n") -> str:
        return f"{dataset}{between}[dim]{images_scored(r.n_scored for r in results if r.dataset == dataset)}[/]"

    mark_width = len("≈ ") if marked else 0
    wide_cell, narrow_cell = mark_width + len("0.0000 (0.000–0.000)"), max(mark_width + 6, len("(0.000–0.000)"))
    model_width = max(len(m) for m in models)
    dataset_width = max(len(scored(d, ": ")) - len("[dim][/]") for d in datasets)
    by_model = model_width + 4 + len(datasets) * (wide_cell + 3)
    by_dataset = dataset_width + 4 + sum(max(wide_cell, len(m)) + 3 for m in models)
    available = width or console.width
    transpose = by_model > available and len(datasets) > len(models)
    between = " " if min(by_model, by_dataset if transpose else by_model) <= available else "\n"
    cell_width = wide_cell if between == " " else narrow_cell

    def cell(model: str, dataset: str) -> str:
        result = cells.get((model, dataset))
        if result is None:
            return ""
        score, mark = result.score, "≈ " if result.approximate else ""
        return f"{mark}{score.value:.4f}{between}[dim]({score.low:.3f}–{score.high:.3f})[/]"

    if not transpose:
        table.add_column("Model", min_width=model_width, no_wrap=True)
        for dataset in datasets:
            table.add_column(scored(dataset), justify="right", min_width=cell_width, overflow="fold")
        for model in models:
            table.add_row(model, *(cell(model, dataset) for dataset in datasets))
    else:
        table.add_column("Dataset", overflow="fold")
        for model in models:
            table.add_column(model, justify="right", min_width=max(cell_width, len(model)), no_wrap=True)
        for dataset in datasets:
            table.add_row(scored(dataset, ": "), *(cell(model, dataset) for model in models))
    notes = [f"{r.model}/{r.dataset}: {r.note}" for r in results if r.note]
    return titled(table, f"{title}: {shows} [dim]({marked}95 % interval in brackets)[/]", "\n".join(notes))


@app.command()
@user_errors
def animate(
    from_model: Annotated[str | None, typer.Argument(help="The model whose map the animation starts from.")] = None,
    to_model: Annotated[str | None, typer.Argument(help="The model whose map it morphs into.")] = None,
    dataset: Annotated[str | None, typer.Argument(help="The dataset both models embedded.")] = None,
    interactive: Annotated[
        bool, typer.Option("--interactive", help="Show a window with a slider instead of writing a GIF.")
    ] = False,
    reduction: Annotated[
        str, typer.Option(help=f"How to reduce embeddings to 2-D: {', '.join(REDUCTIONS)} (any letter case).")
    ] = DEFAULT_REDUCTION,
    split: Annotated[
        Split, typer.Option(case_sensitive=False, help="Which split's images to show.")
    ] = Split.VALIDATION,
    frames: Annotated[
        int,
        typer.Option(
            min=2, help="Frames per loop: fewer make a smaller GIF that steps rather than glides (same loop length)."
        ),
    ] = ANIMATION_FRAMES,
) -> None:
    """Morph one model's 2-D embedding map of a dataset into another's and save it as a GIF."""
    from tti_eval.common import EmbeddingDefinition
    from tti_eval.common.cache import build_command, embeddings_exist
    from tti_eval.plotting.reduction import REDUCERS

    reduction = REDUCERS.canonical_title(reduction)  # an unknown reduction fails before any work
    given = [a for a in (from_model, to_model, dataset) if a]
    if 0 < len(given) < 3:
        raise TTIEvalError("Give all three of FROM_MODEL TO_MODEL DATASET, or none of them to pick interactively.")
    if not given:
        from_model, to_model, dataset = _pick_animation(split)
    parse_pairs([f"{from_model}/{dataset}", f"{to_model}/{dataset}"], (split,))  # known or cached, or a suggestion
    from tti_eval.plotting.animation import build_animation

    pairs = [EmbeddingDefinition(model=m, dataset=dataset) for m in (from_model, to_model)]
    for pair in pairs:
        if not embeddings_exist(pair, split):
            raise TTIEvalError(
                f"{pair} has no {split.value} embeddings; run `{build_command(pair)} --split {split.value}` first."
            )
    _warn_stale(pairs, (split,))
    from tti_eval.common.progress import task

    with progress_display(), task(f"Reducing embeddings with {reduction} and drawing the animation", None):
        path = build_animation(
            pairs[0], pairs[1], split=split, reduction=reduction, interactive=interactive, num_frames=frames
        )
    if path is not None:
        # soft_wrap: never break a path across lines (a notebook's or log's 80 columns would), so it can be copied
        console.print(f"Saved the animation to {path}", highlight=False, soft_wrap=True)


def _pick_animation(split: Split) -> tuple[str, str, str]:
    from .pickers import pick_animation_models, pick_one, require_terminal

    require_terminal("a dataset and two models", "give FROM_MODEL TO_MODEL DATASET as arguments")
    models_by_dataset: dict[str, list[str]] = {}
    for pair in cached_pairs(split):
        models_by_dataset.setdefault(pair.dataset, []).append(pair.model)
    choices = [d for d, models in models_by_dataset.items() if len(models) >= 2]
    if not choices:
        raise TTIEvalError(
            f"No dataset has {split.value} embeddings of two models yet; build a second model with `tti-eval build`."
        )
    dataset = pick_one(choices, "Pick a dataset")
    first, second = pick_animation_models(models_by_dataset[dataset])
    return first, second, dataset


@app.command("list")
@user_errors
def list_(
    all_: Annotated[bool, typer.Option("--all", "-a", help="List every known model and dataset instead.")] = False,
) -> None:
    """Show cached model/dataset pairs, or with --all every known model and dataset."""
    from rich.table import Table

    from tti_eval.common import get_settings
    from tti_eval.common.cache import list_cached, read_shape

    if all_:
        from tti_eval.dataset import DatasetProvider
        from tti_eval.model import ModelProvider

        _report_definition_problems()
        for kind, registry in (("Models", ModelProvider.registry), ("Datasets", DatasetProvider.registry)):
            table = Table(title=kind, title_justify="left")
            for column in ("Title", "Type", "Source"):
                table.add_column(column)
            for title in registry.titles():
                spec = registry.spec(title)
                table.add_row(title, spec.type_name, spec.title_in_source or "")
            console.print(table)
        return
    cached = list_cached()
    if not cached:
        console.print(
            f"No embeddings cached in {get_settings().embeddings_path} yet; build some with `tti-eval build`."
        )
        return
    from tti_eval.provenance import split_state

    table = Table()
    for column in ("Dataset", "Model", "Splits", "N", "D", "State"):
        # titles are never cut: in a narrow terminal the splits and states wrap instead
        whole = column in ("Dataset", "Model")
        width = max((len(getattr(pair, column.lower())) for pair in cached), default=0) if whole else None
        table.add_column(column, justify="right" if column in ("N", "D") else "left", min_width=width, no_wrap=whole)
    memo: dict = {}  # the folders of a dataset (or model) shared by many pairs are stat'ed once
    for pair, splits in cached.items():
        try:
            shapes = [read_shape(pair, s) for s in splits]
            states = [split_state(pair, s, memo=memo) for s in splits]
        except TTIEvalError as e:  # one damaged file must not hide the rest of the cache
            warn(str(e))
            table.add_row(pair.dataset, pair.model, ", ".join(s.value for s in splits), "[red]unreadable[/]", "", "")
            continue
        sizes = " + ".join(str(n) for n, _ in shapes)
        row = (pair.dataset, pair.model, ", ".join(s.value for s in splits), sizes, str(shapes[0][1]))
        table.add_row(*row, _state_cell(states))
    console.print(titled(table, f"Cached embeddings in {get_settings().embeddings_path}"))


def _state_cell(states: "Sequence[SplitState]") -> str:
    """ "up to date", or what is stale and why, or "provenance unknown" for splits that carry no fingerprint."""
    stale = [f"{s.split.value}: {'; '.join(s.reasons)}" for s in states if s.status == "stale"]
    if stale:
        return f"[yellow]stale[/] ({', '.join(stale)})"
    if any(s.status == "unknown" for s in states):
        return "[dim]provenance unknown[/]"
    return "[green]up to date[/]"


from . import compare, report  # noqa: E402, F401  (their commands register on `app`)


def cli() -> None:
    try:
        app()
    finally:
        interrupt_exits_130_from_now_on()


if __name__ == "__main__":  # `python -m tti_eval.cli.main`: run the package's module, where every command registered
    from tti_eval.cli.main import cli as package_cli

    package_cli()
