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
