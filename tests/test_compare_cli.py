"""`tti-eval compare`, `evaluate --split/--per-class/--save/--plot` and `tti-eval report`, end to end on real tiny
models' embeddings of the digits tree (train, validation and test)."""

import os
import subprocess
import sys
from html.parser import HTMLParser

import pytest
from PIL import Image
from typer.testing import CliRunner

from tti_eval.cli.main import app
from tti_eval.common import EmbeddingDefinition, Split
from tti_eval.comparison import ComparisonRun, compare_results
from tti_eval.evaluation import EVALUATORS, run_evaluation
from tti_eval.evaluation.records import EvaluationFile

runner = CliRunner()
MODELS = ("tiny-openclip", "tiny-hf-clip")
DATASET = "digits-tree"
PAIRS = [arg for model in MODELS for arg in ("-md", f"{model}/{DATASET}")]


@pytest.fixture(scope="module")
def built(tiny_models, digits_tree, tmp_path_factory):
    cache = tmp_path_factory.mktemp("compare-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TTI_EVAL_CACHE_PATH", str(cache))
        split_args = ["--split", "train", "--split", "validation", "--split", "test"]
        result = runner.invoke(app, ["build", "--num-workers", "0", *PAIRS, *split_args])
        assert result.exit_code == 0, result.output
        # a third model without a test split
        result = runner.invoke(app, ["build", "--num-workers", "0", "-md", f"tiny-siglip/{DATASET}"])
        assert result.exit_code == 0, result.output
    return cache


@pytest.fixture
def env(built, output_path, monkeypatch):
    monkeypatch.setenv("TTI_EVAL_CACHE_PATH", str(built))
    return output_path


def invoke(*args: str):
    return runner.invoke(app, list(args))


def pairs() -> list[EmbeddingDefinition]:
    return [EmbeddingDefinition(model=m, dataset=DATASET) for m in MODELS]


@pytest.mark.parametrize("columns", [100, 80])
def test_compare_in_a_real_terminal(env, built, columns):
    """A real subprocess, as a user runs it: at 100 columns every score and difference cell stays whole on one line;
    at 80 (a notebook's `!` cell) each interval goes under its value, and names stay whole in both."""
    environ = {
        **os.environ,
        "COLUMNS": str(columns),
        "TTI_EVAL_CACHE_PATH": str(built),
        "TTI_EVAL_OUTPUT_PATH": str(env),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tti_eval.cli.main", "compare", *PAIRS, "-e", "wKNN", "-e", "I2IR", "--save"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    # saved paths are printed whole, for the terminal to wrap, so that they copy in one piece
    assert max(len(line) for line in lines if not line.startswith("Saved the comparison to ")) <= columns
    assert all(any(model in line for line in lines) for model in MODELS)  # names are not cut
    assert "Across datasets · wKNN" in done.stdout and "≈ best:" in done.stdout
    title = next(line for line in lines if line.startswith(f"{DATASET} · wKNN · validation: "))
    assert title.endswith(" images")  # one line, not wrapped at the table's width
    (saved,) = (env / "comparisons").glob("compare_*.json")
    assert saved.with_suffix(".md").is_file()
    run = ComparisonRun.model_validate_json(saved.read_text())
    assert {(g.dataset, g.evaluator, g.split) for g in run.groups} == {
        (DATASET, "wKNN", "validation"),
        (DATASET, "I2IR", "validation"),
    }
    # every saved score and difference is on screen, whole: beside its value at 100 columns, under it at 80
    cells = [
        (g.evaluator, r.model, f"{r.value:.4f}", f"[{r.low:.4f}, {r.high:.4f}]") for g in run.groups for r in g.results
    ] + [
        (g.evaluator, c.model, f"{c.difference.value:+.4f}", f"[{c.difference.low:.4f}, {c.difference.high:.4f}]")
        for g in run.groups
        for c in g.comparisons
    ]
    for evaluator, model, value, interval in cells:
        start = next(i for i, line in enumerate(lines) if line.startswith(f"{DATASET} · {evaluator} · "))
        row = next(i for i in range(start, len(lines)) if f"  {model}  " in f"{lines[i]}  ")
        if columns == 100:
            assert f"{value} {interval}" in lines[row]
        else:
            assert value in lines[row] and interval in lines[row + 1]
            assert lines[row].index(value) + len(value) == lines[row + 1].index(interval) + len(interval)


def test_compare_matches_the_python_api_and_prints_every_figure(env):
    result = invoke("compare", *PAIRS, "--save", "--alpha", "0.01")
    assert result.exit_code == 0, result.output
    (saved,) = (env / "comparisons").glob("compare_*.json")
    run = ComparisonRun.model_validate_json(saved.read_text())
    expected = compare_results(run_evaluation(list(EVALUATORS.values()), pairs()).results, alpha=0.01)
    assert run.groups == expected.groups and run.leaderboards == expected.leaderboards and run.alpha == 0.01
    for group in run.groups:
        assert f"{DATASET} · {group.evaluator} · validation" in result.output
        for comparison in group.comparisons:
            assert f"{comparison.difference.value:+.4f}" in result.output
            tied = "≈ best" in next(
                line for line in result.output.splitlines() if f"{comparison.difference.value:+.4f}" in line
            )
            assert tied == comparison.tied_with_best


def test_compare_per_class_marks_classes_below_another_model(env):
    result = invoke("compare", *PAIRS, "-e", "zero_shot", "--per-class")
    assert result.exit_code == 0, result.output
    run = compare_results(run_evaluation([EVALUATORS["zero_shot"]], pairs()).results)
    (group,) = run.groups
    first, second = group.per_class
    for mine, other in zip(first.classes, second.classes, strict=True):
        row = next(line for line in result.output.splitlines() if line.startswith(f"│ {mine.name} "))
        below = [m.recall.high < o.recall.low for m, o in ((mine, other), (other, mine))]
        assert row.count("▼") == sum(below), row


def test_compare_test_split_and_a_pair_without_it(env):
    result = invoke("compare", *PAIRS, "-md", f"tiny-siglip/{DATASET}", "--split", "test", "-e", "linear_probe")
    assert result.exit_code == 1  # the pair without a test split is named, the others still compared
    assert f"run `tti-eval build --model-dataset tiny-siglip/{DATASET} --split test` first" in result.output
    assert f"{DATASET} · linear_probe · test" in result.output


def test_pairs_of_different_images_cannot_be_paired(env, built):
    """A cache rebuilt from other images (here: one fewer) is refused in one sentence."""
    from tti_eval.common.cache import embedding_path, load_embeddings, load_metadata, save_embeddings

    other = EmbeddingDefinition(model="copy", dataset=DATASET)
    for split in (Split.TRAIN, Split.VALIDATION):
        source = EmbeddingDefinition(model=MODELS[0], dataset=DATASET)
        embeddings = load_embeddings(source, split)
        if split == Split.VALIDATION:
            embeddings = type(embeddings)(
                images=embeddings.images[1:], labels=embeddings.labels[1:], classes=embeddings.classes
            )
        save_embeddings(other, embeddings, split, load_metadata(source, split))
    try:
        result = invoke("compare", "-md", f"{MODELS[0]}/{DATASET}", "-md", f"copy/{DATASET}", "-e", "wKNN")
    finally:
        for split in (Split.TRAIN, Split.VALIDATION):
            embedding_path(other, split).unlink()
    assert result.exit_code == 1
    assert "'tiny-openclip' and 'copy' cannot be paired" in " ".join(result.output.split())


def test_evaluate_test_split_saves_a_self_describing_json(env, monkeypatch):
    from tti_eval.plotting import confusion

    titles = []
    drawn = confusion.plot_confusion
    monkeypatch.setattr(
        confusion, "plot_confusion", lambda m, n, title, path: titles.append(title) or drawn(m, n, title, path)
    )
    result = invoke(
        "evaluate", *PAIRS, "--split", "test", "--save", "--plot", "--per-class", "-e", "linear_probe", "-e", "wKNN"
    )
    assert result.exit_code == 0, result.output
    (csv_path,) = (env / "evaluations").glob("eval_*.csv")
    saved = EvaluationFile.model_validate_json(csv_path.with_suffix(".json").read_text())
    assert {(r.model, r.evaluator, r.split) for r in saved.results} == {
        (m, e, "test") for m in MODELS for e in ("linear_probe", "wKNN")
    }
    expected = run_evaluation([EVALUATORS["linear_probe"], EVALUATORS["wKNN"]], pairs(), split=Split.TEST).results
    for record, result_ in zip(saved.results, expected, strict=True):
        assert record.metrics["accuracy"].value == result_.score.value
        assert record.chosen == result_.chosen and record.n_scored == result_.n_scored
        assert set(record.fingerprints) == {"train", "validation", "test"}
        assert record.per_class == result_.per_class and record.class_names == list(result_.class_names)
    probe = next(r for r in saved.results if r.evaluator == "linear_probe")
    assert min(probe.parameters["C_search"]) <= probe.chosen["C"] <= max(probe.parameters["C_search"])
    assert f"C = {probe.chosen['C']:.3g}, chosen on the validation split" in " ".join(result.output.split())
    assert "recall per class" in result.output and "digit 0" in result.output
    assert "linear_probe: Accuracy on the test split" in " ".join(result.output.split())
    pictures = sorted((env / "evaluations").glob("*_confusion.png"))
    assert len(pictures) == 4 and all(Image.open(path).size[0] > 300 for path in pictures)
    assert titles == [  # each names the model, the metric, the split and the images scored
        f"{r.model} on {r.dataset} · {r.evaluator}\nAccuracy on the test split {r.score.value:.3f}, {r.n_scored} images"
        for r in expected
    ]


class Structure(HTMLParser):
    def __init__(self):
        super().__init__()
        self.headings, self.images, self.links, self.current = [], [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.current = tag
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag in ("script", "link") or (tag == "a" and not attrs.get("href", "#").startswith("#")):
            self.links.append(tag)

    def handle_data(self, data):
        if self.current in ("h2", "h3"):
            self.headings.append(data.strip())

    def handle_endtag(self, tag):
        self.current = None


def test_report_from_the_latest_comparison_and_from_an_evaluation(env):
    assert invoke("compare", *PAIRS, "-e", "wKNN", "--save").exit_code == 0
    assert invoke("animate", *MODELS, DATASET, "--reduction", "pca").exit_code == 0
    result = invoke("report")
    assert result.exit_code == 0, result.output
    (page,) = (env / "reports").glob("report_*.html")
    structure = Structure()
    structure.feed(page.read_text())
    assert f"{DATASET} · wKNN · validation" in structure.headings and "Animations" in structure.headings
    assert structure.images and all(src.startswith("data:image/") for src in structure.images)
    assert any(src.startswith("data:image/gif") for src in structure.images) and not structure.links

    assert invoke("evaluate", *PAIRS, "-e", "I2IR", "--save").exit_code == 0
    (saved,) = (env / "evaluations").glob("eval_*.json")
    page.unlink()
    result = invoke("report", "--from", str(saved))
    assert result.exit_code == 0, result.output
    (page,) = (env / "reports").glob("report_*.html")
    structure = Structure()
    structure.feed(page.read_text())
    assert f"{DATASET} · I2IR · validation" in structure.headings


def test_report_without_saved_results_says_what_to_run(env):
    result = invoke("report")
    assert result.exit_code == 1 and "run `tti-eval compare --save`" in " ".join(result.output.split())
