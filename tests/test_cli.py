"""`tti-eval evaluate`, `animate` and `list`, end to end through typer on embeddings of real tiny models."""

import csv
import os
import subprocess
import sys

import pytest
from PIL import Image
from typer.testing import CliRunner

from tti_eval.cli.main import app
from tti_eval.common import EmbeddingDefinition, Split
from tti_eval.common.cache import embedding_path, load_embeddings

runner = CliRunner()
MODELS = ("tiny-openclip", "tiny-hf-clip")
DATASET = "digits-tree"


@pytest.fixture(scope="module")
def built(tiny_models, digits_tree, tmp_path_factory):
    """Two tiny models' train and validation embeddings of the digits tree, in a cache of this module's own."""
    cache = tmp_path_factory.mktemp("cli-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TTI_EVAL_CACHE_PATH", str(cache))
        args = ["build", "--num-workers", "0"]
        for model in MODELS:
            args += ["-md", f"{model}/{DATASET}"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    return cache


@pytest.fixture
def cli_env(built, output_path, monkeypatch):
    monkeypatch.setenv("TTI_EVAL_CACHE_PATH", str(built))
    return output_path


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_evaluate_prints_tables_and_saves_csv_and_charts(cli_env):
    from tti_eval.evaluation import EVALUATORS

    pairs = [arg for model in MODELS for arg in ("-md", f"{model}/{DATASET}")]
    result = invoke("evaluate", *pairs, "--save", "--plot")
    assert result.exit_code == 0, result.output
    for title, evaluator in EVALUATORS.items():
        assert f"{title}: {evaluator.spec.main_metric.label}" in result.output  # each table says what it shows
    assert all(model in result.output for model in MODELS) and DATASET in result.output

    (csv_path,) = (cli_env / "evaluations").glob("eval_*.csv")
    rows = list(csv.DictReader(csv_path.open()))
    assert list(rows[0])[:4] == ["Model", "Dataset", "Classifier", "Accuracy"]
    assert {(r["Model"], r["Classifier"], r["Metric"]) for r in rows} == {
        (m, t, e.spec.main_metric.label) for m in MODELS for t, e in EVALUATORS.items()
    }
    charts = sorted(p for p in (cli_env / "evaluations").glob("eval_*.png") if not p.stem.endswith("_confusion"))
    assert len(charts) == len(EVALUATORS) and all(Image.open(c).size[0] > 300 for c in charts)


def test_a_registered_evaluator_is_a_choice_of_evaluate(cli_env):
    """A new evaluator needs only its own module: registered, it runs from the CLI and lands in the CSV."""
    from tests.test_evaluation_contract import NearestCentroidClassifier
    from tti_eval.evaluation import EVALUATORS, register_evaluator

    register_evaluator(NearestCentroidClassifier)
    try:
        result = invoke("evaluate", "-md", f"{MODELS[0]}/{DATASET}", "-e", "TOY_CENTROID", "--save")
    finally:
        EVALUATORS.unregister(NearestCentroidClassifier.spec.title)
    assert result.exit_code == 0, result.output
    (csv_path,) = (cli_env / "evaluations").glob("eval_*.csv")
    (row,) = list(csv.DictReader(csv_path.open()))
    pair = EmbeddingDefinition(model=MODELS[0], dataset=DATASET)
    expected = NearestCentroidClassifier(load_embeddings(pair, Split.TRAIN), load_embeddings(pair, Split.VALIDATION))
    assert (row["Classifier"], float(row["Accuracy"])) == ("toy_centroid", expected.evaluate())
    assert f"{float(row['Accuracy']):.4f}" in result.output


def test_evaluate_one_evaluator_matches_the_python_api(cli_env):
    from tti_eval.evaluation import WeightedKNNClassifier

    result = invoke("evaluate", "-md", f"{MODELS[0]}/{DATASET}", "-e", "wknn", "--save")
    assert result.exit_code == 0 and "I2IR" not in result.output
    (csv_path,) = (cli_env / "evaluations").glob("eval_*.csv")
    (row,) = list(csv.DictReader(csv_path.open()))
    pair = EmbeddingDefinition(model=MODELS[0], dataset=DATASET)
    expected = WeightedKNNClassifier(
        load_embeddings(pair, Split.TRAIN), load_embeddings(pair, Split.VALIDATION)
    ).evaluate()
    assert float(row["Accuracy"]) == pytest.approx(expected, abs=1e-12)


def test_evaluate_cross_validates_the_linear_probe_on_request(cli_env):
    from tti_eval.evaluation import LinearProbeClassifier

    result = invoke("evaluate", "-md", f"{MODELS[0]}/{DATASET}", "-e", "linear_probe", "--cross-validate", "--save")
    assert result.exit_code == 0, result.output
    (csv_path,) = (cli_env / "evaluations").glob("eval_*.csv")
    (row,) = list(csv.DictReader(csv_path.open()))
    pair = EmbeddingDefinition(model=MODELS[0], dataset=DATASET)
    probe = LinearProbeClassifier(
        load_embeddings(pair, Split.TRAIN), load_embeddings(pair, Split.VALIDATION), cross_validate=True
    )
    assert float(row["Accuracy"]) == pytest.approx(probe.evaluate(), abs=1e-12)
    assert f"C = {probe.C:g}, chosen by" in row["Note"]
    assert "chosen by" in " ".join(result.output.split())  # the note is the table's caption too


def test_evaluate_all_and_missing_pairs(cli_env):
    result = invoke("evaluate", "--all")
    assert result.exit_code == 0 and all(m in result.output for m in MODELS)
    result = invoke("evaluate", "-md", f"tiny-siglip/{DATASET}", "-md", f"{MODELS[0]}/{DATASET}")
    assert result.exit_code == 1
    assert f"run `tti-eval build --model-dataset tiny-siglip/{DATASET}` first" in result.output
    assert "wKNN" in result.output  # the other pair was still evaluated


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-md", "nope/digits-tree"], "Unknown model 'nope'"),
        (["-md", "tiny-openclip"], "is not of the form MODEL/DATASET"),
        (["-md", f"tiny-openclip/{DATASET}", "-e", "knn"], "Unknown evaluator 'knn'. Did you mean 'wKNN'?"),
        ([], "No terminal"),
    ],
)
def test_evaluate_errors(cli_env, args, message):
    result = invoke("evaluate", *args)
    assert result.exit_code == 1 and message in result.output


def test_animate_writes_a_gif_with_the_class_names(cli_env):
    result = invoke("animate", MODELS[0], MODELS[1], DATASET, "--reduction", "pca")
    assert result.exit_code == 0, result.output
    (gif,) = (cli_env / "animations").glob("*.gif")
    assert DATASET in gif.name and MODELS[0] in gif.name and MODELS[1] in gif.name and "validation" in gif.name
    assert str(gif) in result.output.replace("\n", "")
    with Image.open(gif) as image:
        assert image.n_frames == 40 and image.size == (800, 480)


def test_animate_frames_sets_the_frames_per_loop(cli_env):
    result = invoke("animate", MODELS[0], MODELS[1], DATASET, "--reduction", "pca", "--frames", "6")
    assert result.exit_code == 0, result.output
    (gif,) = (cli_env / "animations").glob("*.gif")
    with Image.open(gif) as image:
        assert image.n_frames == 6
    assert invoke("animate", MODELS[0], MODELS[1], DATASET, "--frames", "1").exit_code == 2  # a usage error


def test_animate_reuses_cached_reductions(cli_env, built):
    invoke("animate", MODELS[0], MODELS[1], DATASET, "--reduction", "pca")
    reductions = sorted((built / "reductions").rglob("*.npz"))
    assert len(reductions) == 2
    stamps = [p.stat().st_mtime_ns for p in reductions]
    assert invoke("animate", MODELS[0], MODELS[1], DATASET, "--reduction", "pca").exit_code == 0
    assert [p.stat().st_mtime_ns for p in reductions] == stamps


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([MODELS[0], MODELS[1]], "Give all three"),
        ([MODELS[0]], "Give all three"),
        ([MODELS[0], "tiny-siglip", DATASET], f"run `tti-eval build --model-dataset tiny-siglip/{DATASET}"),
        ([MODELS[0], "tiny-openclp", DATASET], "Did you mean 'tiny-openclip'"),
        ([MODELS[0], MODELS[1], DATASET, "--reduction", "mds"], "mds"),
        ([], "No terminal"),
    ],
)
def test_animate_errors(cli_env, args, message):
    result = invoke("animate", *args)
    assert result.exit_code != 0 and message in result.output.replace("\n", " ")


def test_list_shows_cached_pairs_with_sizes(cli_env, digits_tree):
    result = invoke("list")
    assert result.exit_code == 0
    lines = [line for line in result.output.splitlines() if DATASET in line]
    assert len(lines) == len(MODELS)
    sizes = f"{digits_tree.sizes['train']} + {digits_tree.sizes['validation']}"
    assert all(sizes in line and "train, validation" in line and "16" in line for line in lines)


def test_list_keeps_titles_whole_in_a_narrow_terminal(built):
    """A real process at 40 columns: the dataset and model names stay whole; the other columns wrap instead."""
    done = subprocess.run(
        [sys.executable, "-m", "tti_eval.cli.main", "list"],
        env={**os.environ, "COLUMNS": "40", "TTI_EVAL_CACHE_PATH": str(built)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("│ " + DATASET)]
    assert sorted(row.split("│")[2].strip() for row in rows) == sorted(MODELS)


def test_list_all_shows_every_known_model_and_dataset(cli_env):
    result = runner.invoke(app, ["list", "--all"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for expected in (
        "siglip_large",
        "google/siglip-large-patch16-256",
        "HFModel",
        "tiny-openclip",
        "rsicd",
        "EncordDataset",
        DATASET,
        "ImageFolderDataset",
    ):
        assert expected in result.output


def test_list_on_an_empty_cache(cache_path):
    result = invoke("list")
    assert result.exit_code == 0 and "No embeddings cached" in result.output


def test_help_answers_without_heavy_imports():
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom tti_eval.cli.main import app\n"
        "assert CliRunner().invoke(app, ['--help']).exit_code == 0\n"
        "print(sorted({'torch', 'transformers', 'open_clip', 'faiss', 'umap', 'encord'} & set(sys.modules)))"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )


def test_a_damaged_cache_file_gets_its_sentence_and_the_rest_still_runs(built, output_path, tmp_path, monkeypatch):
    import shutil

    cache = tmp_path / "damaged-cache"
    shutil.copytree(built, cache)
    monkeypatch.setenv("TTI_EVAL_CACHE_PATH", str(cache))
    damaged = embedding_path(EmbeddingDefinition(model=MODELS[0], dataset=DATASET), Split.TRAIN)
    damaged.write_bytes(damaged.read_bytes()[:1000])

    result = invoke("evaluate", "--all", "-e", "wKNN")
    assert result.exit_code == 1
    assert f"{damaged} cannot be read" in result.output and "--overwrite" in result.output
    assert MODELS[1] in result.output  # the intact pair was still evaluated

    result = invoke("list")
    assert result.exit_code == 0 and "unreadable" in result.output and MODELS[1] in result.output


def test_cached_pairs_need_no_definition_to_be_evaluated(built, output_path, tmp_path, monkeypatch):
    """A cache written by the original tool (or one whose definition was removed) is still evaluated by name."""
    import shutil

    cache = tmp_path / "orphan-cache"
    shutil.copytree(built, cache)
    monkeypatch.setenv("TTI_EVAL_CACHE_PATH", str(cache))
    source = cache / "embeddings" / DATASET
    for split in ("train", "validation"):
        shutil.copy(source / f"{MODELS[0]}_{split}.npz", source / f"old-model_{split}.npz")
    result = invoke("evaluate", "-md", f"old-model/{DATASET}", "-e", "zero_shot")
    assert result.exit_code == 0 and "old-model" in result.output
    result = invoke("animate", "old-model", MODELS[1], DATASET, "--reduction", "pca")
    assert result.exit_code == 0, result.output


def test_evaluate_all_and_named_pairs_do_not_mix(cli_env):
    result = invoke("evaluate", "--all", "-md", f"{MODELS[0]}/{DATASET}")
    assert result.exit_code == 1 and "not both" in result.output


def test_evaluate_models_times_datasets_and_a_suite(cli_env, tmp_path):
    """`-m`/`-d` patterns (any letter case) select cached pairs; a suite adds its evaluators and their parameters."""
    from tti_eval.evaluation import WeightedKNNClassifier

    result = invoke("evaluate", "-m", "TINY-*", "-d", DATASET, "-e", "wknn")
    assert result.exit_code == 0, result.output
    assert all(model in result.output for model in MODELS)

    suite = tmp_path / "suite.json"
    suite.write_text(
        f'{{"models": ["{MODELS[0]}"], "datasets": ["{DATASET}"], "evaluators": ["WKNN"], '
        '"params": {"wknn": {"k": 3}}}'
    )
    result = invoke("evaluate", "--suite", str(suite), "--save")
    assert result.exit_code == 0, result.output
    (csv_path,) = (cli_env / "evaluations").glob("eval_*.csv")
    (row,) = list(csv.DictReader(csv_path.open()))
    pair = EmbeddingDefinition(model=MODELS[0], dataset=DATASET)
    expected = WeightedKNNClassifier(
        load_embeddings(pair, Split.TRAIN), load_embeddings(pair, Split.VALIDATION), k=3
    ).evaluate()
    assert float(row["Accuracy"]) == pytest.approx(expected, abs=1e-12)

    result = invoke("evaluate", "-m", "nothing-like-this*", "-d", DATASET)
    assert result.exit_code == 1 and "No model matches 'nothing-like-this*'" in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-h"], "Evaluate text-image embedding models"),
        (["build", "-h"], "--suite"),
        (["--version"], "tti-eval 0."),
        (["build", "-md", "tiny-openclip/digits-tree", "--split", "ALL"], "Build splits one by one"),
        (["animate", "--split", "Validation"], "give FROM_MODEL TO_MODEL DATASET as arguments"),
        (["animate", "a", "b", "c", "--reduction", "PCA", "--split", "TEST"], "Unknown model 'a'"),
    ],
)
def test_consistent_options(cli_env, args, expected):
    result = invoke(*args)
    assert expected in " ".join(result.output.split())


def test_evaluate_approximate_search_marks_scores_and_notes_recall(cli_env):
    result = invoke("evaluate", "-md", f"{MODELS[0]}/{DATASET}", "-e", "wknn", "--search", "Approximate", "--save")
    assert result.exit_code == 0, result.output
    assert "≈" in result.output and "recall@11" in " ".join(result.output.split())
    (csv_path,) = (cli_env / "evaluations").glob("eval_*.csv")
    (row,) = list(csv.DictReader(csv_path.open()))
    assert "Approximate search (IVF" in row["Note"] and "recall@11" in row["Note"]
    assert "≈" not in invoke("evaluate", "-md", f"{MODELS[0]}/{DATASET}", "-e", "wknn", "--search", "EXACT").output
    result = invoke("evaluate", "-md", f"{MODELS[0]}/{DATASET}", "--search", "fast")
    assert result.exit_code == 1 and "There is no search 'fast'; choose exact, approximate or auto." in result.output
