import os
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from tti_eval.common import (
    EmbeddingDefinition,
    Embeddings,
    InvalidEmbeddingsError,
    Settings,
    Split,
    TTIEvalError,
    get_settings,
    malloc,
)
from tti_eval.common.cache import embedding_path


def test_split_values():
    assert [s.value for s in Split] == ["train", "validation", "test", "all"]
    assert Split("validation") is Split.VALIDATION


def test_embeddings_coerce_dtypes():
    e = Embeddings(images=np.ones((3, 4), dtype=np.float64), labels=[0, 1, 1], classes=np.ones((2, 4)))
    assert e.images.dtype == np.float32 and e.classes.dtype == np.float32 and e.labels.dtype == np.int64
    assert e.dim == 4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"images": np.ones((3, 4)), "labels": [0, 1]}, "images has 3 rows but labels has 2"),
        ({"images": np.ones(4), "labels": [0]}, "images must be a 2-D array"),
        ({"images": np.ones((2, 4)), "labels": [[0], [1]]}, "labels must be a 1-D array"),
        ({"images": np.ones((2, 4)), "labels": [0, 1], "classes": np.ones((2, 3))}, "classes have dimension 3"),
        ({"images": np.ones((2, 4)), "labels": [0.5, 1]}, "labels must be integers"),
        ({"images": np.ones((2, 4)), "labels": [-1, 1]}, "non-negative"),
    ],
)
def test_embeddings_reject_mismatched_shapes(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        Embeddings(**kwargs)


def test_check_usable_rejects_zero_and_non_finite():
    Embeddings(images=np.eye(2), labels=[0, 1]).check_usable()
    with pytest.raises(InvalidEmbeddingsError, match="all-zero"):
        Embeddings(images=np.zeros((2, 2)), labels=[0, 1]).check_usable()
    with pytest.raises(InvalidEmbeddingsError, match="NaN or infinite"):
        Embeddings(images=[[np.nan, 1.0]], labels=[0]).check_usable()


@pytest.mark.parametrize("title", ["..", "../x", "a/b", "a\\b", "/abs", ".hidden", "", "a b", "x..y"])
def test_definition_titles_cannot_escape_the_cache(title):
    with pytest.raises(ValidationError):
        EmbeddingDefinition(model=title, dataset="plants")
    with pytest.raises(ValidationError):
        EmbeddingDefinition(model="clip", dataset=title)


def test_definition_paths_stay_inside_the_cache(cache_path):
    d = EmbeddingDefinition(model="siglip_large", dataset="Alzheimer-MRI")
    path = embedding_path(d, Split.TRAIN)
    assert path == cache_path / "embeddings" / "Alzheimer-MRI" / "siglip_large_train.npz"
    assert path.resolve().is_relative_to(cache_path.resolve())


@pytest.mark.parametrize("text", ["clip", "clip/", "/plants", "a/b/c", "../x/plants"])
def test_parse_rejects_malformed_pairs(text):
    with pytest.raises(TTIEvalError):
        EmbeddingDefinition.parse(text)


def test_parse():
    assert EmbeddingDefinition.parse("clip/plants") == EmbeddingDefinition(model="clip", dataset="plants")


def test_settings_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TTI_EVAL_CACHE_PATH", str(tmp_path / "c"))
    monkeypatch.setenv("TTI_EVAL_OUTPUT_PATH", str(tmp_path / "o"))
    monkeypatch.setenv("TTI_EVAL_SOURCES_PATH", f"{tmp_path / 's'}{os.pathsep}{os.pathsep}{tmp_path / 't'}")
    monkeypatch.setenv("ENCORD_SSH_KEY_PATH", str(tmp_path / "key"))
    s = get_settings()
    assert (s.cache_path, s.output_path, s.sources_paths, s.encord_ssh_key_path) == (
        tmp_path / "c",
        tmp_path / "o",
        [tmp_path / "s", tmp_path / "t"],  # in order; the empty entry between two separators is dropped
        tmp_path / "key",
    )
    assert s.embeddings_path == tmp_path / "c" / "embeddings"


def test_settings_from_dotenv(monkeypatch, tmp_path):
    for var in ("TTI_EVAL_CACHE_PATH", "TTI_EVAL_OUTPUT_PATH", "ENCORD_SSH_KEY_PATH"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / ".env").write_text("TTI_EVAL_CACHE_PATH=/data/tti\nENCORD_SSH_KEY_PATH=/keys/encord\n")
    monkeypatch.chdir(tmp_path)
    s = get_settings()
    assert str(s.cache_path) == "/data/tti" and str(s.encord_ssh_key_path) == "/keys/encord"


@pytest.fixture
def settings_env(monkeypatch, tmp_path):
    """No tti-eval variable in the environment, and a working directory whose `.env` the test writes."""
    for name in os.environ:
        if name.upper().startswith(("TTI_EVAL_", "ENCORD_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path / ".env"


def test_environment_wins_over_dotenv_field_by_field(settings_env, monkeypatch):
    settings_env.write_text(
        "TTI_EVAL_CACHE_PATH=/dot/cache\nexport TTI_EVAL_SOURCES_PATH='/dot/src'\nTTI_EVAL_OUTPUT_PATH\nOTHER=1\n"
    )
    monkeypatch.setenv("TTI_EVAL_CACHE_PATH", "/env/cache")
    s = get_settings()
    # A bare `KEY` line sets nothing; unknown keys are ignored.
    assert (str(s.cache_path), s.sources_path, s.output_path) == ("/env/cache", "/dot/src", Path("output"))
    monkeypatch.setenv("TTI_EVAL_SOURCES_PATH", "")  # set, though empty: wins over .env all the same
    assert get_settings().sources_path == ""


@pytest.mark.parametrize(
    ("dotenv", "environment", "expected"),
    [
        ({}, {"TTI_EVAL_ENCORD_SSH_KEY_PATH": "/b"}, "/b"),
        ({}, {"ENCORD_SSH_KEY_PATH": "/a", "TTI_EVAL_ENCORD_SSH_KEY_PATH": "/b"}, "/a"),  # the first name wins
        ({"ENCORD_SSH_KEY_PATH": "/a", "TTI_EVAL_ENCORD_SSH_KEY_PATH": "/b"}, {}, "/a"),
        ({"ENCORD_SSH_KEY_PATH": "/a"}, {"TTI_EVAL_ENCORD_SSH_KEY_PATH": "/b"}, "/b"),  # any name in the environment
        ({}, {"encord_ssh_key_path": "/lower"}, "/lower"),  # names match whatever their case
        ({"tti_eval_encord_ssh_key_path": "/lower"}, {}, "/lower"),
        ({}, {}, None),
    ],
)
def test_encord_key_variable_names(settings_env, monkeypatch, dotenv, environment, expected):
    settings_env.write_text("".join(f"{name}={value}\n" for name, value in dotenv.items()))
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    found = get_settings().encord_ssh_key_path
    assert (str(found) if found else None) == expected


def test_keyword_arguments_win_over_the_environment(settings_env, monkeypatch):
    monkeypatch.setenv("TTI_EVAL_CACHE_PATH", "/env/cache")
    monkeypatch.setenv("TTI_EVAL_OUTPUT_PATH", "/env/out")
    s = Settings(cache_path="/kw/cache", TTI_EVAL_OUTPUT_PATH="/kw/out")
    assert (str(s.cache_path), str(s.output_path)) == ("/kw/cache", "/kw/out")


def test_default_cache_is_the_user_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("TTI_EVAL_CACHE_PATH", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert get_settings().cache_path == tmp_path / "tti-eval"


@pytest.mark.skipif(malloc._glibc() is None, reason="the setting is glibc's")
def test_freed_memory_is_reused_by_the_next_batch():
    """Batches that each allocate and free 64 MiB fault their pages in once, not once per batch."""
    import resource

    def page_faults() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

    def batch() -> None:
        activations = [np.ones(4 << 20, dtype=np.float32) for _ in range(4)]  # 4 × 16 MiB, then freed
        del activations

    with malloc.freed_memory_kept():
        batch()
        before = page_faults()
        for _ in range(5):
            batch()
        assert page_faults() - before < 2_000  # faulting each batch in again would take 5 × 16,384
