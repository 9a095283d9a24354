"""Score tables say what they show (metric, split, images scored) and keep names and intervals whole at 100 columns."""

import dataclasses
import io
import re

import pytest
from rich.console import Console

from tests.test_evaluation_contract import grid_of_results
from tti_eval.cli.main import scores_table
from tti_eval.evaluation import EVALUATORS

NAMES = {"alpha": "digits-clip", "beta": "digits-clip-random"}


def render(results, width: int = 100) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(scores_table("wKNN", results, width=width))
    return console.file.getvalue()


@pytest.fixture(scope="module")
def results():
    return [dataclasses.replace(r, model=NAMES[r.model]) for r in grid_of_results(EVALUATORS["wKNN"])]


def expected_cells(results) -> set[tuple[str, str, str]]:
    """(model, dataset, cell) as the table must show them, written out from the results."""
    return {(r.model, r.dataset, f"{r.score.value:.4f} ({r.score.low:.3f}–{r.score.high:.3f})") for r in results}


def test_at_100_columns_models_and_intervals_are_whole(results):
    text = render(results)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "wKNN: Accuracy on the validation split" in " ".join(text.split())
    n_scored = {r.dataset: r.n_scored for r in results}
    assert all(f"{n} images" in text for n in n_scored.values())
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if line.startswith("│")}
    assert set(rows) == set(NAMES.values())  # full names, one row each
    for model, _, cell in expected_cells(results):
        assert cell in rows[model]


def test_more_datasets_than_fit_are_transposed(results):
    many = [dataclasses.replace(r, dataset=f"{r.dataset}-{i}") for i in range(4) for r in results]
    text = render(many)
    assert max(len(line) for line in text.splitlines()) <= 100
    header = next(line for line in text.splitlines() if "Dataset" in line)
    assert all(name in header for name in NAMES.values())
    rows = [line for line in text.splitlines() if line.startswith("│")]
    assert len(rows) == 8
    for model, dataset, cell in expected_cells(many):
        (row,) = [line for line in rows if re.search(rf"│ {re.escape(dataset)}: ", line)]
        column = [name.strip() for name in header.strip("┃").split("┃")].index(model)
        assert row.strip("│").split("│")[column].strip() == cell
    assert render(many, width=300).count("│ digits-clip ") == 1  # wide enough: models stay the rows


def test_too_narrow_for_intervals_beside_scores_they_go_under_them(results):
    long = [dataclasses.replace(r, dataset=f"{r.dataset}-a-long-dataset-name") for r in results]
    text = render(long, width=60)
    assert max(len(line) for line in text.splitlines()) <= 60
    rows = [line.strip("│").split("│") for line in text.splitlines() if line.startswith("│")]
    for model, dataset, cell in expected_cells(long):
        column = 1 if dataset.startswith("one") else 2
        at = next(i for i, row in enumerate(rows) if row[0].strip() == model)
        assert f"{rows[at][column].strip()} {rows[at + 1][column].strip()}" == cell


def test_title_and_notes_wrap_at_the_terminal_not_at_the_table(results):
    """A one-dataset table is 46 columns wide; its title and notes still read as lines of the terminal's width."""
    one = [r for r in results if r.dataset == results[0].dataset]
    one[0] = dataclasses.replace(one[0], note="Nearly collapsed embeddings: its scores say little.")
    lines = render(one, width=80).splitlines()
    table_width = max(len(line) for line in lines if line.startswith("│"))
    assert table_width < 50
    assert lines[0].rstrip() == "wKNN: Accuracy on the validation split (95 % interval in brackets)"
    note = f"{one[0].model}/{one[0].dataset}: {one[0].note}"
    assert lines[-1].rstrip() == note and len(note) > table_width


def test_per_class_recall_intervals_go_under_the_recall_when_the_models_do_not_fit():
    from tti_eval.cli.main import per_class_table
    from tti_eval.comparison.results import ClassResult, Interval, PerClassResult

    models = ["digits-clip", "digits-clip-random", "vit-b-32-laion2b"]
    per_class = [
        PerClassResult(
            model=model,
            classes=[
                ClassResult(
                    name=str(k),
                    support=27,
                    recall=Interval(value=0.5 + k / 40 + m / 10, low=0.4, high=0.9),
                    precision=None,
                )
                for k in range(3)
            ],
            confusion_matrix=[[0] * 3] * 3,
        )
        for m, model in enumerate(models)
    ]
    for width in (100, 80):
        console = Console(file=io.StringIO(), width=width, color_system=None)
        console.print(per_class_table("wKNN on digits", per_class, width=width))
        lines = console.file.getvalue().splitlines()
        assert max(len(line) for line in lines) <= width
        header = next(line for line in lines if "Images" in line)
        assert all(model in header for model in models)  # names whole
        rows = [line.strip("│").split("│") for line in lines if line.startswith("│")]
        for m, result in enumerate(per_class):
            for k, found in enumerate(result.classes):
                value, interval = f"{found.recall.value:.3f}", f"[{found.recall.low:.3f}, {found.recall.high:.3f}]"
                if width == 100:  # beside the recall on the class's line
                    (row,) = [row for row in rows if row[0].strip() == str(k)]
                    assert row[2 + m].strip() == f"{value} {interval}"
                else:  # under it, on the line below
                    at = next(i for i, row in enumerate(rows) if row[0].strip() == str(k))
                    assert [rows[at][2 + m].strip(), rows[at + 1][2 + m].strip()] == [value, interval]


def test_leaderboard_keeps_model_names_whole_when_many_models_share_80_columns():
    from tti_eval.cli.compare import leaderboard_table
    from tti_eval.comparison.results import HeadToHead, Leaderboard, Standing

    models = ["digits-clip", "digits-clip-random", "vit-b-32-laion2b", "siglip_small"]
    board = Leaderboard(
        evaluator="wKNN",
        split="validation",
        metric="Accuracy",
        standings=[Standing(model=m, mean_rank=k + 1.0, datasets=2) for k, m in enumerate(models)],
        head_to_head=[
            HeadToHead(model=m, other=o, wins=int(k < j), ties=0, losses=int(k > j))
            for k, m in enumerate(models)
            for j, o in enumerate(models)
            if m != o
        ],
    )
    console = Console(file=io.StringIO(), width=80, color_system=None)
    console.print(leaderboard_table(board))
    lines = console.file.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    for k, model in enumerate(models):  # each row starts with the whole name, then its mean rank
        (row,) = [line for line in lines if line.startswith(f"{model} ")]
        assert row.split()[1] == f"{k + 1.0:.2f}"
