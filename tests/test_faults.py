"""Faults and bad inputs (issue #14): each is one sentence naming what to fix, a non-zero exit, no traceback, and a
cache that still loads afterwards; or a correct result with a one-line warning.

`CASES` is the table: a set-up that makes the fault (deterministically: a patched writer, a full or read-only tmpfs
where this machine may mount one), the command, the exit code and the sentence. Typer's runner never prints a
traceback, so `SUBPROCESS_CASES` runs a representative few as real processes. Faults covered elsewhere and kept
holding there: images in every mode and unreadable images (tests/test_images.py), definitions checked at load
(tests/test_registry.py, tests/test_dataset_types.py), a killed or interrupted build (tests/test_build.py), concurrent
writers and stale temporaries (tests/test_cache.py).
"""

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.fixtures.datasets import write_digits_tree
from tti_eval.cli.main import app
from tti_eval.common import EmbeddingDefinition, Embeddings, Split, atomic
from tti_eval.common.cache import embedding_path, load_embeddings, load_metadata, save_embeddings

runner = CliRunner()
DATASET = "faults-tree"
MODELS = ("tiny-openclip", "tiny-hf-clip")
PAIR = EmbeddingDefinition(model=MODELS[0], dataset=DATASET)
CLI = "from tti_eval.cli.main import cli; cli()"


@pytest.fixture(scope="module")
def built(tiny_models, test_sources_dir, tmp_path_factory) -> Iterator[Path]:
    """Two tiny models' train and validation embeddings of a small private digits tree, in this module's cache."""
    root = tmp_path_factory.mktemp("faults-tree")
    write_digits_tree(root, {"train": 3, "validation": 2})
    definition = test_sources_dir / "datasets" / f"{DATASET}.json"
    definition.write_text(
        json.dumps({"dataset_type": "ImageFolderDataset", "title": DATASET, "title_in_source": str(root)})
    )
    cache = tmp_path_factory.mktemp("faults-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TTI_EVAL_CACHE_PATH", str(cache))
        args = ["build", "--num-workers", "0", *(a for m in MODELS for a in ("-md", f"{m}/{DATASET}"))]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    yield cache
    definition.unlink()


@dataclass
class Env:
    """One case's surroundings: a private copy of the built cache, an output folder and a scratch folder."""

    tmp: Path
    cache: Path
    output: Path
    monkeypatch: pytest.MonkeyPatch
    mounts: list[Path] = field(default_factory=list)  # tmpfs mounts to undo

    def use_cache(self, path: Path) -> None:
        self.cache = path
        self.monkeypatch.setenv("TTI_EVAL_CACHE_PATH", str(path))

    def use_output(self, path: Path) -> None:
        self.output = path
        self.monkeypatch.setenv("TTI_EVAL_OUTPUT_PATH", str(path))


@pytest.fixture
def env(built, tmp_path, monkeypatch) -> Iterator[Env]:
    cache = tmp_path / "cache"
    shutil.copytree(built, cache)
    case = Env(tmp_path, cache, tmp_path / "output", monkeypatch)
    case.use_cache(cache)
    case.use_output(case.output)
    try:
        yield case
    finally:
        for path in reversed(case.mounts):
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


# -- faults the machine provides: small tmpfs mounts, full or read-only ------------------------------------------------


def _tmpfs(env: Env, name: str, size: str = "256k") -> Path:
    path = env.tmp / name
    path.mkdir()
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip("this machine cannot mount a tmpfs here (it needs root), so a full or read-only disk is not made")
    env.mounts.append(path)
    return path


def _fill(folder: Path) -> None:
    """Write until the file system has no space left."""
    with open(folder / "filler", "wb", buffering=0) as handle:  # unbuffered: closing it must not write again
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC


def _read_only(folder: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True, capture_output=True)


def _cache_on_tmpfs(env: Env, fill: bool = False, read_only: bool = False) -> Path:
    folder = _tmpfs(env, "small-disk", size="4m")
    shutil.copytree(env.cache, folder / "cache")
    env.use_cache(folder / "cache")
    if fill:
        _fill(folder)
    if read_only:
        _read_only(folder)
    return folder


def _output_on_tmpfs(env: Env, fill: bool = False, read_only: bool = False) -> None:
    folder = _tmpfs(env, "small-out")
    env.use_output(folder / "output")
    if fill:
        _fill(folder)
    if read_only:
        _read_only(folder)


# -- the cases ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Env], list[str]]  # makes the fault; returns the command's arguments
    exit_code: int
    sentence: str  # regex of the sentence (or warning) that names what to fix
    prefix: str = "Error:"  # what the sentence's line starts with
    check: Callable[[Env, str], None] | None = None  # anything else the case must leave true


def _evaluate_save(env: Env) -> list[str]:
    return ["evaluate", "-md", str(PAIR), "--save", "-e", "wKNN"]


def _device(name: str) -> Callable[[Env], list[str]]:
    def setup(env: Env) -> list[str]:
        from tti_eval.model import ModelProvider

        def no_loading(*args, **kwargs):
            raise AssertionError("a model was loaded before the device was checked")

        env.monkeypatch.setattr(ModelProvider, "get_model", no_loading)
        return ["build", "-md", str(PAIR), "--overwrite", "--device", name]

    return setup


def _devices_here() -> str:
    from tti_eval.model.base import available_devices

    return re.escape(", ".join(available_devices()))


def _collapsed_text_tower(env: Env) -> list[str]:
    from tti_eval.model.base import Model

    def same_for_every_prompt(self, texts, batch_size=256):
        return np.full((len(texts), 16), 0.25, dtype=np.float32)

    env.monkeypatch.setattr(Model, "embed_texts", same_for_every_prompt)
    return ["build", "-md", str(PAIR), "--overwrite", "--split", "validation", "--num-workers", "0"]


def _damaged_npz(how: str) -> Callable[[Env], list[str]]:
    def setup(env: Env) -> list[str]:
        path = embedding_path(PAIR, Split.VALIDATION)
        path.write_bytes(b"" if how == "empty" else path.read_bytes()[: path.stat().st_size // 2])
        return ["build", "-md", str(PAIR), "--num-workers", "0"]

    return setup


def _rebuilt(env: Env, output: str) -> None:
    assert "(validation) is damaged or incomplete; rebuilding it" in output and "(validation) built" in output


def _not_utf8_env(env: Env) -> list[str]:
    (env.tmp / ".env").write_bytes(b"X=\xff\xfe\n")
    env.monkeypatch.chdir(env.tmp)
    return ["list"]


def _unreadable_env(env: Env) -> list[str]:
    import dotenv

    def unreadable(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")  # as root, chmod would not stop the read

    (env.tmp / ".env").write_text("X=1\n")
    env.monkeypatch.chdir(env.tmp)
    env.monkeypatch.setattr(dotenv, "dotenv_values", unreadable)
    return ["list"]


def _cache_is_a_file(args: list[str]) -> Callable[[Env], list[str]]:
    def setup(env: Env) -> list[str]:
        path = env.tmp / "cache-file"
        path.write_text("not a folder")
        env.use_cache(path)
        return args

    return setup


def _sources_missing(env: Env) -> list[str]:
    env.monkeypatch.setenv("TTI_EVAL_SOURCES_PATH", f"{os.environ['TTI_EVAL_SOURCES_PATH']}{os.pathsep}/no/such/dir")
    return ["list", "--all"]


def _output_is_a_file(env: Env) -> list[str]:
    path = env.tmp / "output-file"
    path.write_text("not a folder")
    env.use_output(path)
    return _evaluate_save(env)


def _on_tmpfs(
    place: Callable[..., object], command: Callable[[Env], list[str]], **fault: bool
) -> Callable[[Env], list[str]]:
    """A set-up that puts the cache or output on a small tmpfs, full or read-only, then runs `command`."""

    def setup(env: Env) -> list[str]:
        place(env, **fault)
        return command(env)

    return setup


def _no_work_done(env: Env, output: str) -> None:
    assert "wKNN: " not in output  # checked before any pair was evaluated


def _csv_write_fails(env: Env) -> list[str]:
    real_replace = os.replace

    def full_at_the_csv(source, target):
        if str(target).endswith(".csv"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(source, target)

    env.monkeypatch.setattr(atomic.os, "replace", full_at_the_csv)
    return _evaluate_save(env)


def _scores_kept_on_screen(env: Env, output: str) -> None:
    assert "wKNN: " in output and MODELS[0] in output  # the table came before the failed write
    assert not list((env.output / "evaluations").glob("*.csv")) and not list((env.output / "evaluations").glob(".*"))


def _animate(env: Env) -> list[str]:
    return ["animate", MODELS[0], MODELS[1], DATASET, "--reduction", "pca"]


def _gif_written(env: Env, output: str) -> None:
    assert "Saved the animation to" in output and len(list((env.output / "animations").glob("*.gif"))) == 1


def _build_on_full_cache(env: Env) -> list[str]:
    _cache_on_tmpfs(env, fill=True)
    return ["build", "-md", str(PAIR), "--overwrite", "--split", "validation", "--num-workers", "0"]


def _checkpoint_on_full_cache(env: Env) -> list[str]:
    # The untrained demo model writes its seeded checkpoint into the cache, whose disk is full.
    _cache_on_tmpfs(env, fill=True)
    return ["build", "-md", f"digits-clip-random/{DATASET}", "--split", "validation", "--num-workers", "0"]


def _nothing_partial(env: Env, output: str) -> None:
    assert not [p for p in env.cache.rglob(".*.tmp")]


def _nan_class_embeddings(env: Env) -> list[str]:
    train = load_embeddings(PAIR, Split.TRAIN)
    classes = train.classes.copy()
    classes[3] = np.nan
    save_embeddings(
        PAIR,
        Embeddings(images=train.images, labels=train.labels, classes=classes),
        Split.TRAIN,
        load_metadata(PAIR, Split.TRAIN),
    )
    return ["evaluate", "-md", str(PAIR), "--save", "-e", "wKNN", "-e", "zero_shot"]


def _skipped_evaluator_saved(env: Env, output: str) -> None:
    import csv

    (csv_path,) = (env.output / "evaluations").glob("eval_*.csv")
    rows = {row["Classifier"]: row for row in csv.DictReader(csv_path.open())}
    assert float(rows["wKNN"]["Accuracy"]) >= 0 and rows["zero_shot"]["Accuracy"] == ""
    assert (
        rows["zero_shot"]["Note"]
        == "Skipped: the class embeddings contain NaN or infinite values; rebuild the embeddings."
    )
    saved = json.loads(csv_path.with_suffix(".json").read_text())
    assert [r["evaluator"] for r in saved["results"]] == ["wKNN"]
    assert saved["skipped"] == [
        {
            "model": PAIR.model,
            "dataset": DATASET,
            "evaluator": "zero_shot",
            "reason": "the class embeddings contain NaN or infinite values; rebuild the embeddings.",
        }
    ]


CASES = [
    *(
        Case(
            f"device-{name}",
            _device(name),
            1,
            rf"Device '{name}' cannot run a model on this machine; use one of those it has: {{devices}}\.",
        )
        for name in ("meta", "xla", "cuda:7", "gpu")
    ),
    Case(
        "collapsed-class-embeddings",
        _collapsed_text_tower,
        1,
        r"Model 'tiny-openclip' embeds the prompts of classes 'digit 0' and 'digit 1' identically \(cosine 1\.00000\), "
        r"so it cannot tell classes apart; check that its tokenizer files are present and that the prompts fit its "
        r"text length\.",
        prefix=f"✗ {PAIR}:",
    ),
    *(
        Case(
            f"{how}-npz",
            _damaged_npz(how),
            0,
            rf"{PAIR} \(validation\) is damaged or incomplete; rebuilding it",
            prefix="•",
            check=_rebuilt,
        )
        for how in ("empty", "truncated")
    ),
    Case(
        "env-not-utf8",
        _not_utf8_env,
        1,
        r"The \.env file in .* cannot be read \(not UTF-8 text at byte 2\); make it a readable UTF-8 text file or "
        r"remove it\.",
    ),
    Case(
        "env-unreadable",
        _unreadable_env,
        1,
        r"The \.env file in .* cannot be read \(Permission denied\); make it a readable UTF-8 text file or remove it\.",
    ),
    *(
        Case(
            f"cache-path-is-a-file-{args[0]}",
            _cache_is_a_file(args),
            1,
            r"The cache path .*cache-file is a file, not a folder; point TTI_EVAL_CACHE_PATH at a folder\.",
        )
        for args in (
            ["list"],
            ["build", "-md", str(PAIR)],
            ["evaluate", "-md", str(PAIR)],
            ["animate", MODELS[0], MODELS[1], DATASET],
        )
    ),
    Case(
        "sources-path-missing",
        _sources_missing,
        0,
        r"TTI_EVAL_SOURCES_PATH names /no/such/dir, which does not exist; fix or remove it\.",
        prefix="Warning:",
    ),
    Case(
        "output-path-is-a-file",
        _output_is_a_file,
        1,
        r".*output-file is a file where a folder is needed to write the scores; move it or point "
        r"TTI_EVAL_OUTPUT_PATH elsewhere\.",
        check=_no_work_done,
    ),
    Case(
        "output-read-only",
        _on_tmpfs(_output_on_tmpfs, _evaluate_save, read_only=True),
        1,
        r".*small-out/output/evaluations is not writable \(Read-only file system\), so the scores cannot be "
        r"written; make it writable or point TTI_EVAL_OUTPUT_PATH elsewhere\.",
        check=_no_work_done,
    ),
    Case(
        "output-full",
        _on_tmpfs(_output_on_tmpfs, _evaluate_save, fill=True),
        1,
        r"No space left on the disk of .*small-out/output/evaluations while writing the scores; free space or point "
        r"TTI_EVAL_OUTPUT_PATH elsewhere\.",
        check=_no_work_done,
    ),
    Case(
        "csv-write-fails-after-scores",
        _csv_write_fails,
        1,
        r"No space left on the disk of .*/evaluations while writing eval_[\d_-]+\.csv; free space or point "
        r"TTI_EVAL_OUTPUT_PATH elsewhere\.",
        check=_scores_kept_on_screen,
    ),
    Case(
        "nan-class-embeddings",
        _nan_class_embeddings,
        1,
        r"zero_shot skipped for tiny-openclip/faults-tree: the class embeddings contain NaN or infinite values; "
        r"rebuild the embeddings\.",
        prefix="Warning:",
        check=_skipped_evaluator_saved,
    ),
    Case(
        "animate-same-model",
        lambda env: ["animate", MODELS[0], MODELS[0], DATASET],
        1,
        r"Both models are 'tiny-openclip', and a map cannot morph into itself; pick two different models\.",
    ),
    Case(
        "animate-read-only-cache",
        _on_tmpfs(_cache_on_tmpfs, _animate, read_only=True),
        0,
        r"The pca map of tiny-openclip/faults-tree is not cached: .*/reductions/faults-tree is not writable "
        r"\(Read-only file system\), so .* cannot be written; make it writable or point TTI_EVAL_CACHE_PATH "
        r"elsewhere\.",
        prefix="WARNING",
        check=_gif_written,
    ),
    Case(
        "animate-full-cache",
        _on_tmpfs(_cache_on_tmpfs, _animate, fill=True),
        0,
        r"The pca map of tiny-openclip/faults-tree is not cached: no space left on the disk of .*/reductions/"
        r"faults-tree while writing .*; free space or point TTI_EVAL_CACHE_PATH elsewhere\.",
        prefix="WARNING",
        check=_gif_written,
    ),
    Case(
        "cache-write-full-disk",
        _build_on_full_cache,
        1,
        r"No space left on the disk of .*/embeddings/faults-tree while writing tiny-openclip_validation\.npz; free "
        r"space or point TTI_EVAL_CACHE_PATH elsewhere\.",
        prefix=f"✗ {PAIR}:",
        check=_nothing_partial,
    ),
    Case(
        "checkpoint-write-full-disk",
        _checkpoint_on_full_cache,
        1,
        r"No space left on the disk of .*/models/digits-clip-random while writing checkpoint\.pt; free space or point "
        r"TTI_EVAL_CACHE_PATH elsewhere\.",
        prefix=f"✗ digits-clip-random/{DATASET}:",
        check=_nothing_partial,
    ),
]


_LINE_STARTS = ("•", "✓", "✗", "Loading", "Error:", "Warning:", "WARNING", "INFO", "Saved")


def _lines(output: str, prefix: str) -> list[str]:
    """Each line that starts with `prefix`, without it; a sentence rich wrapped is joined back up to its full stop."""
    lines, found = output.splitlines(), []
    for i, line in enumerate(lines):
        if line.lstrip().startswith(prefix):
            text = line.lstrip()[len(prefix) :].strip()
            for rest in lines[i + 1 :]:
                if text.endswith(".") or not rest.strip() or rest.startswith(_LINE_STARTS):
                    break
                text += " " + rest.strip()
            found.append(text)
    return found


def _assert_one_sentence(output: str, prefix: str, pattern: str) -> None:
    """Exactly one line with `prefix` says `pattern`, as one sentence; an error is the only error line."""
    lines = _lines(output, prefix)
    if prefix == "Error:":
        assert len(lines) == 1, f"expected one error line:\n{output}"
    matching = [text for text in lines if re.fullmatch(pattern, text)]
    assert len(matching) == 1, f"{pattern!r} is not one of {lines!r} in:\n{output}"
    assert not re.search(r"\.\s+[A-Z]", matching[0]), f"more than one sentence: {matching[0]!r}"


def _assert_cache_loadable(cache: Path) -> None:
    """Every embeddings file (all arrays, metadata included) and every cached reduction still loads; read directly,
    since a case may have left the settings unusable on purpose."""
    files = [*cache.glob("embeddings/*/*.npz"), *cache.glob("reductions/**/*.npz")] if cache.is_dir() else []
    for path in files:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        if "metadata" in arrays:
            json.loads(str(arrays["metadata"]))
        if "points" in arrays:
            assert arrays["points"].shape[1] == 2
        else:
            assert len(arrays["labels"]) == len(arrays["image_embeddings"])


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_fault(env: Env, case: Case) -> None:
    args = case.setup(env)
    result = runner.invoke(app, args)
    output = result.output
    assert result.exit_code == case.exit_code, output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in output
    _assert_one_sentence(output, case.prefix, case.sentence.replace("{devices}", _devices_here()))
    if case.check is not None:
        case.check(env, output)
    _assert_cache_loadable(env.cache)


# -- real processes: what a user's terminal shows, tracebacks included -------------------------------------------------


def _run(env: Env, args: list[str], cwd: Path | None = None, code: str = CLI) -> subprocess.CompletedProcess:
    process_env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=process_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


SUBPROCESS_CASES = ["env-not-utf8", "cache-path-is-a-file-build", "device-meta", "animate-same-model"]


@pytest.mark.parametrize("case", [c for c in CASES if c.id in SUBPROCESS_CASES], ids=SUBPROCESS_CASES)
def test_fault_in_a_real_process(env: Env, case: Case) -> None:
    args = case.setup(env)  # patches made here do not reach the process; these cases need none
    process = _run(env, args, cwd=Path.cwd())
    output = process.stdout + process.stderr
    assert process.returncode == case.exit_code, output
    assert "Traceback" not in output
    _assert_one_sentence(output, case.prefix, case.sentence.replace("{devices}", _devices_here()))
    _assert_cache_loadable(env.cache)


def test_ctrl_c_after_the_work_is_done_still_exits_130_with_the_note(env: Env) -> None:
    # The interrupt arrives during the interpreter's shutdown, after the command has returned.
    code = f"import atexit, os, signal; atexit.register(os.kill, os.getpid(), signal.SIGINT); {CLI}"
    process = _run(env, ["list"], code=code)
    output = process.stdout + process.stderr
    assert process.returncode == 130, output
    assert "Traceback" not in output and "Exception ignored" not in output
    _assert_one_sentence(
        output, "Error:", r"Interrupted; finished files are kept and a rerun picks up where this one stopped\."
    )


# -- the checks behind the sentences, against slow references ----------------------------------------------------------


def test_collapsed_classes_are_found_against_a_pairwise_reference():
    from tti_eval.common import TTIEvalError
    from tti_eval.compute import COLLAPSED_COSINE, check_distinct_classes

    def reference(classes: np.ndarray) -> bool:  # every pair of different classes, one at a time, in float64
        n = len(classes)
        return any(
            float(np.dot(classes[i].astype(np.float64), classes[j])) > COLLAPSED_COSINE
            for i in range(n)
            for j in range(n)
            if i != j
        )

    rng = np.random.default_rng(0)
    for trial in range(40):
        n = int(rng.integers(1, 12))
        classes = rng.normal(size=(n, 8))
        if n > 1 and trial % 2:  # bring two classes close: some just above the threshold, some just below
            i, j = rng.choice(n, 2, replace=False)
            classes[j] = classes[i] + rng.normal(size=8) * 10 ** -float(rng.uniform(1.5, 3.5))
        classes = (classes / np.linalg.norm(classes, axis=1, keepdims=True)).astype(np.float32)
        names = [f"class {k}" for k in range(n)]
        collapsed = reference(classes)
        if collapsed:
            with pytest.raises(TTIEvalError, match="identically"):
                check_distinct_classes(classes, names, "m")
        else:
            check_distinct_classes(classes, names, "m")


def test_collapsed_classes_are_found_across_row_blocks():
    from tti_eval.common import TTIEvalError
    from tti_eval.common.vectors import CHUNK_ROWS
    from tti_eval.compute import check_distinct_classes

    n = CHUNK_ROWS + 100  # the two equal classes fall into different blocks of rows
    classes = np.eye(n, dtype=np.float32)
    classes[n - 1] = classes[2]
    names = [f"c{k}" for k in range(n)]
    with pytest.raises(TTIEvalError, match=f"classes 'c2' and 'c{n - 1}' identically"):
        check_distinct_classes(classes, names, "m")
    classes[n - 1] = classes[n - 2]
    with pytest.raises(TTIEvalError, match=f"classes 'c{n - 2}' and 'c{n - 1}' identically"):
        check_distinct_classes(classes, names, "m")


def test_stray_checkpoint_temporaries_of_dead_writers_are_swept(env: Env):
    from tti_eval.model import ModelProvider

    folder = env.cache / "models" / "digits-clip-random"
    ModelProvider.get_model("digits-clip-random", device="cpu")  # its checkpoint exists: the next load writes none
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stray = folder / f".checkpoint.pt.{atomic._HOST}@{dead.pid}@0123abcd.tmp"
    live = folder / f".checkpoint.pt.{atomic._HOST}@{os.getpid()}@0123abcd.tmp"
    stray.write_bytes(b"half a checkpoint")
    live.write_bytes(b"being written")
    ModelProvider.get_model("digits-clip-random", device="cpu")
    assert not stray.exists() and live.exists() and (folder / "checkpoint.pt").is_file()


def test_a_write_error_that_is_not_the_files_own_passes_through(tmp_path):
    """A download that `write` reads from may fail with an OSError too: it must not be called a full disk."""

    def failing_download(handle):
        handle.write(b"first bytes")
        raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")

    with pytest.raises(ConnectionResetError):
        atomic.atomic_write(tmp_path / "image.jpg", failing_download)
    assert list(tmp_path.iterdir()) == []


def test_save_embeddings_on_a_read_only_cache_is_one_sentence(env: Env):
    from tti_eval.common.errors import WriteError

    embeddings = load_embeddings(PAIR, Split.VALIDATION)
    _cache_on_tmpfs(env, read_only=True)
    with pytest.raises(WriteError, match=r"is not writable \(Read-only file system\), so tiny-openclip_test\.npz"):
        save_embeddings(PAIR, embeddings, Split.TEST)
