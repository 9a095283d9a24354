"""Selections: `-md` pairs, the cross product of `-m`/`-d` shell patterns, and suite files."""

import json
from pathlib import Path

import pytest

from tti_eval.cli.selection import match_titles, named_pairs
from tti_eval.common import EmbeddingDefinition, Split
from tti_eval.common.errors import TTIEvalError
from tti_eval.schemas import render_schemas
from tti_eval.suite import Suite

REPO = Path(__file__).parent.parent


def pairs(*texts: str) -> list[EmbeddingDefinition]:
    return [EmbeddingDefinition.parse(t) for t in texts]


def test_patterns_match_in_any_letter_case_in_the_order_given():
    known = ["siglip_small", "clip", "SigLIP_large", "digits-clip", "digits-clip-random"]
    assert match_titles(["SIGLIP*"], known, "model") == ["siglip_small", "SigLIP_large"]
    assert match_titles(["digits-clip", "*clip*"], known, "model") == [
        "digits-clip",
        "clip",
        "digits-clip-random",
    ]
    assert match_titles(["digits-clip-?andom"], known, "model") == ["digits-clip-random"]


def test_models_times_datasets_after_the_named_pairs():
    selected = named_pairs(["clip/plants"], ["DIGITS-CLIP*"], ["digits", "plant?"])
    assert selected == pairs(
        "clip/plants",
        "digits-clip/digits",
        "digits-clip/plants",
        "digits-clip-random/digits",
        "digits-clip-random/plants",
    )
    assert named_pairs() is None  # nothing named: the command offers its picker


@pytest.mark.parametrize(
    ("models", "datasets", "message"),
    [
        (["digits-clp"], ["digits"], "No model matches 'digits-clp'. Did you mean 'digits-clip'"),
        (["zzz*"], ["digits"], "No model matches 'zzz*'. Run `tti-eval list --all`"),
        (["clip"], ["plonts"], "No dataset matches 'plonts'. Did you mean 'plants'"),
        (["clip"], None, "--model needs --dataset too"),
        (None, ["plants"], "--dataset needs --model too"),
    ],
)
def test_a_selection_that_names_nothing_is_one_sentence(models, datasets, message):
    with pytest.raises(TTIEvalError, match="^" + message.replace("*", r"\*").replace("?", r"\?")):
        named_pairs(None, models, datasets)


def test_a_suite_adds_its_cross_product(tmp_path):
    path = tmp_path / "suite.json"
    path.write_text(json.dumps({"models": ["digits-clip"], "datasets": ["plants", "digits"], "splits": ["TEST"]}))
    suite = Suite.read(path)
    assert suite.splits == [Split.TEST] and suite.evaluators == [] and suite.params == {}
    assert named_pairs(["clip/plants"], suite=suite) == pairs("clip/plants", "digits-clip/plants", "digits-clip/digits")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"models": [], "datasets": ["digits"]}, "not valid at models"),
        ({"models": ["clip"], "datasets": ["digits"], "evaluator": ["wKNN"]}, "not valid at evaluator"),
        ({"models": ["clip"], "datasets": ["digits"], "splits": ["everything"]}, "not valid at splits.0"),
    ],
)
def test_a_bad_suite_is_one_sentence_naming_the_file(tmp_path, content, message):
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(content))
    with pytest.raises(TTIEvalError, match=f"The suite file {path} is {message}"):
        Suite.read(path)
    with pytest.raises(TTIEvalError, match="Cannot read the suite file"):
        Suite.read(tmp_path / "missing.json")


def test_the_example_suite_is_valid_and_the_schema_up_to_date():
    assert (REPO / "sources" / "suite-schema.json").read_text() == render_schemas()["suite-schema.json"]
    suite = Suite.read(REPO / "examples" / "digits-suite.json")
    assert named_pairs(suite=suite) == pairs("digits-clip/digits", "digits-clip-random/digits")


def test_reading_the_cache_patterns_stand_for_built_pairs(cache_path):
    from tti_eval.common.cache import embedding_path

    for pair in pairs("digits-clip/digits", "old-model/digits"):  # old-model has no definition: an original cache
        for split in (Split.TRAIN, Split.VALIDATION):
            embedding_path(pair, split).parent.mkdir(parents=True, exist_ok=True)
            embedding_path(pair, split).write_bytes(b"")
    reading = (Split.TRAIN, Split.VALIDATION)
    assert named_pairs(None, ["*"], ["dig*"], cached_splits=reading) == pairs("digits-clip/digits", "old-model/digits")
    # both titles named: kept, so evaluate can say how to build it
    assert named_pairs(None, ["CLIP"], ["digits"], cached_splits=reading) == pairs("clip/digits")
    assert len(named_pairs(None, ["*"], ["dig*"])) > 2  # building, patterns stand for every definition
