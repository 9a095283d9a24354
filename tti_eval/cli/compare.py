"""`tti-eval compare`: which models the data can tell apart, per (dataset, evaluator) and across datasets.

It selects pairs and evaluators exactly as `evaluate` does, runs the same evaluation, and hands the results (which
keep their per-image outcomes) to `tti_eval.comparison.compare_results`; this module only prints and saves.
"""

from typing import TYPE_CHECKING, Annotated

import typer

from .console import console, fits, stacked, titled, user_errors, warn
from .main import (
    AllOption,
    DatasetOption,
    EvaluatorOption,
    ModelDatasetOption,
    ModelOption,
    ScoredSplit,
    SearchOption,
    Selection,
    SplitOption,
    SuiteOption,
    app,
    per_class_table,
    run_with_progress,
    select_work,
)

if TYPE_CHECKING:
    from rich.console import RenderableType

    from tti_eval.comparison import ComparisonRun
    from tti_eval.comparison.results import GroupComparison, Leaderboard


@app.command()
@user_errors
def compare(
    model_dataset: ModelDatasetOption = None,
    model: ModelOption = None,
    dataset: DatasetOption = None,
    suite: SuiteOption = None,
    all_: AllOption = False,
    evaluator: EvaluatorOption = None,
    split: SplitOption = ScoredSplit.VALIDATION,
    alpha: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="A model is tied with the best when its Holm-adjusted p is at least this."),
    ] = 0.05,
    save: Annotated[
        bool, typer.Option("--save", "-s", help="Write compare_<time>.json and .md to the output folder.")
    ] = False,
    per_class: Annotated[
        bool, typer.Option("--per-class", help="Also show each class's recall for the compared models side by side.")
    ] = False,
    search: SearchOption = "auto",
) -> None:
    """Rank models on the same images: paired differences to the best, Holm-adjusted p, ties with the best."""
    from tti_eval.comparison import compare_results, save_comparison

    selection = Selection(model_dataset, model, dataset, suite)
    evaluators, search_mode, pairs, missing, params = select_work(evaluator, search, selection, all_, split, "compare")
    if save:
        from tti_eval.common.atomic import check_writable

        check_writable(comparisons_folder(), "the comparison")
    run = run_with_progress(
        evaluators, pairs, split, search_mode, params, per_class=False
    )  # the comparison has its own
    comparison = compare_results(run.results, alpha=alpha, on_problem=warn)
    print_comparison(comparison, per_class)
    if save and comparison.groups:
        json_path, markdown_path = save_comparison(comparison, comparisons_folder())
        console.print(f"Saved the comparison to {json_path} and {markdown_path}", highlight=False, soft_wrap=True)
    if missing or not comparison.groups:
        raise typer.Exit(1)


def comparisons_folder():
    from tti_eval.common import get_settings

    return get_settings().output_path / "comparisons"


def print_comparison(run: "ComparisonRun", per_class: bool = False) -> None:
    from tti_eval.comparison.writers import TIED

    if not run.groups:
        console.print("Nothing could be compared.")
        return
    for group in run.groups:
        console.print(group_table(group))
        if per_class and group.per_class:
            console.print(per_class_table(f"{group.dataset} · {group.evaluator}", group.per_class))
    for board in run.leaderboards:
        console.print(leaderboard_table(board))
    console.print(
        f"{TIED}: the Holm-adjusted p of the paired test against the best is at least {run.alpha:g}, so these images "
        "cannot tell the model from the best.",
        highlight=False,
    )


def group_table(group: "GroupComparison", width: int | None = None) -> "RenderableType":
    """Ranked models of one (dataset, evaluator, split). Each interval sits beside its value when the table fits
    `width` (the terminal's by default) so, else under it: a notebook's 80 columns then still show whole names."""
    from rich import box
    from rich.table import Table

    from tti_eval.comparison.writers import GROUP_HEADER, describe_test, group_rows

    def table(header: list[str], rows: list[list[str]]) -> Table:
        # No vertical rules, outer padding or edges: at 100 columns six columns of one-line intervals fit with
        # 18-letter names, and at 80 the same with each interval under its value.
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, show_edge=False)
        for k, column in enumerate(header):
            if k == 1:  # a long model name wraps rather than being cut
                table.add_column(column, overflow="fold")
            else:
                table.add_column(column, justify="left" if k == 5 else "right", no_wrap=True)
        for row, style in zip(rows, ["bold"] + [""] * len(group.comparisons), strict=True):
            table.add_row(*row, style=style)
        return table

    rows = group_rows(group)
    chosen = table(GROUP_HEADER, rows)
    if not fits(chosen, width or console.width):
        chosen = table(stacked(GROUP_HEADER), [stacked(row) for row in rows])
    return titled(
        chosen,
        f"\n{group.dataset} · {group.evaluator} · {group.split}: {group.metric} on {group.n} images",
        f"Paired 95 % bootstrap intervals; p from {describe_test(group)}, Holm-adjusted.",
    )


def leaderboard_table(board: "Leaderboard") -> "RenderableType":
    from rich import box
    from rich.table import Table

    from tti_eval.comparison.writers import leaderboard_rows

    header, rows = leaderboard_rows(board)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, show_edge=False)
    for k, column in enumerate(header):
        if k == 0:  # names whole; with many models the "vs MODEL" headers wrap instead
            table.add_column(column, no_wrap=True)
        else:
            table.add_column(column, justify="right", overflow="fold")
    for row in rows:
        table.add_row(*row)
    return titled(
        table, f"\nAcross datasets · {board.evaluator} · {board.split}: mean rank, wins/ties/losses vs each model"
    )
