"""The pickers, driven by keys through a pipe as a user would type them; the screen is read back as text."""

import io
import itertools
import re

import pytest
import typer

from tests import terminal
from tti_eval.cli.pickers import (
    MULTI_KEYS,
    NOTHING_TICKED,
    pick_animation_models,
    pick_one,
    pick_pairs,
    pick_some,
    words_scorer,
)
from tti_eval.common import EmbeddingDefinition

UP, DOWN, TAB, ENTER, CTRL_A, CTRL_R, CTRL_C = "\x1b[A", "\x1b[B", "\t", "\r", "\x01", "\x12", "\x03"
PAIRS = [
    EmbeddingDefinition(model=m, dataset=d)
    for m, d in (("clip", "plants"), ("siglip_small", "plants"), ("tinyclip", "plants"), ("tinyclip", "digits"))
]


def drive(keys: str | tuple[str, ...], pick, *args, codes: bool = False, **kwargs):
    """Run a picker on `keys` (a tuple: chunks typed a second apart, so a filter or a message shows before
    the next keys), then Ctrl-C, so a picker that stays open ends instead of waiting. Returns its result and the
    screen it drew, without escape codes; with `codes`, the output as written until that Ctrl-C (for
    `terminal.screen`), and None as the result of a picker still open then."""
    import threading
    import time

    from prompt_toolkit.application import create_app_session
    from prompt_toolkit.data_structures import Size
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output.vt100 import Vt100_Output

    chunks = (keys,) if isinstance(keys, str) else keys
    screen, before_cancel = io.StringIO(), []
    output = Vt100_Output(screen, lambda: Size(rows=30, columns=150), term="xterm")
    with create_pipe_input() as pipe, create_app_session(input=pipe, output=output):

        def type_keys() -> None:
            for chunk in chunks:
                pipe.send_text(chunk)
                time.sleep(1.0)  # half a second was too short for the filter on a machine under load
            before_cancel.append(screen.getvalue())
            pipe.send_text(CTRL_C)

        typist = threading.Thread(target=type_keys)
        typist.start()
        try:
            result = pick(*args, **kwargs)
        except typer.Exit:
            if not codes:
                raise
            result = None
        finally:
            typist.join()
    if codes:
        return result, before_cancel[0]
    return result, re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]|\x1b[=>]", "", screen.getvalue())


def test_tab_ticks_and_enter_confirms():
    picked, screen = drive(DOWN + TAB + TAB + ENTER, pick_pairs, PAIRS)
    assert picked == PAIRS[1:3]
    assert "2 picked: siglip_small/plants, tinyclip/plants" in screen  # the confirmation, readable


def test_enter_with_nothing_ticked_picks_nothing_and_says_how_to_tick():
    picked, screen = drive((ENTER, DOWN + TAB + ENTER), pick_pairs, PAIRS)
    assert picked == [PAIRS[1]]  # not the line highlighted at the first Enter
    assert NOTHING_TICKED in screen


def test_enter_with_nothing_ticked_never_returns_the_highlighted_line():
    with pytest.raises(typer.Exit) as exit_:
        drive(ENTER, pick_some, ["clip", "siglip"], "Pick models")
    assert exit_.value.exit_code == 130


def test_select_all_and_invert():
    assert drive(CTRL_A + ENTER, pick_pairs, PAIRS)[0] == PAIRS
    assert drive(TAB + CTRL_R + ENTER, pick_pairs, PAIRS)[0] == PAIRS[1:]


def test_filter_words_match_in_any_order():
    assert drive(("plants tiny", CTRL_A + ENTER), pick_pairs, PAIRS)[0] == [PAIRS[2]]
    # Tab and arrows while the filter matches nothing do nothing (InquirerPy's own stop the picker there)
    assert drive(("zzz", TAB + DOWN + UP, "\x7f" * 3, TAB + ENTER), pick_pairs, PAIRS)[0] == [PAIRS[0]]
    assert drive(("dig tiny", ENTER), pick_one, [str(p) for p in PAIRS], "Pick")[0] == "tinyclip/digits"


def test_words_scorer_matches_when_every_word_is_a_subsequence():
    def is_subsequence(word: str, text: str) -> bool:
        rest = iter(text.lower())
        return all(char in rest for char in word.lower())

    names = [str(p) for p in PAIRS] + ["digits-clip-random/digits"]
    for first, second in itertools.product(["ti", "pl", "clp", "zz", "dig", "rand"], repeat=2):
        for name in names:
            score, hits = words_scorer(f"{first} {second}", name)
            assert (hits is not None) == (is_subsequence(first, name) and is_subsequence(second, name))


def test_the_header_names_the_order_and_the_hidden_pairs_and_keys():
    _, screen = drive(TAB + ENTER, pick_pairs, PAIRS[::-1], "Pick pairs to build", hidden=3)
    assert "MODEL/DATASET, 4 offered; 3 already built, hidden" in screen
    assert "Ctrl-A: tick all" in screen and "Ctrl-R: invert" in screen
    lines = re.findall(r"[│❯ ]+([a-z_]+/[a-z]+)\s*│", screen)[:4]
    assert lines == [
        "tinyclip/digits",
        "tinyclip/plants",
        "siglip_small/plants",
        "clip/plants",
    ]  # grouped by model, in the order given


def test_the_model_picker_names_what_it_offers_and_how_many_like_the_pair_picker():
    _, screen = drive(TAB + ENTER, pick_some, ["clip", "siglip", "tinyclip"], "Pick models for plants", "MODEL", 2)
    assert "Pick models for plants: (MODEL, 3 offered; 2 already built, hidden (--include-existing shows them))" in (
        " ".join(screen.split())
    )
    _, screen = drive(TAB + ENTER, pick_some, ["clip", "siglip"], "Pick models for plants", "MODEL")
    assert "(MODEL, 2 offered)" in screen and "hidden" not in screen


def test_a_ticked_line_is_marked_apart_from_the_cursor():
    picked, raw = drive(DOWN + TAB, pick_pairs, PAIRS, codes=True)  # Tab ticks and moves down
    assert picked is None
    shown = terminal.screen(raw)
    assert {"│ ✓ siglip_small/plants", "│❯  tinyclip/plants"} <= {line[:-1].rstrip() for line in shown}, shown
    assert len(MULTI_KEYS) <= 100  # the key line fits a 100-column terminal unbroken


def test_animate_asks_for_its_from_and_to_models_by_their_argument_names():
    picked, screen = drive((DOWN + ENTER, ENTER), pick_animation_models, ["clip", "siglip", "tinyclip"])
    assert picked == ("siglip", "clip")
    assert "FROM_MODEL, whose map the animation starts from: siglip" in screen
    assert "TO_MODEL, whose map siglip's morphs into: clip" in screen


def test_ctrl_c_says_cancelled_and_exits_130(capsys):
    with pytest.raises(typer.Exit) as exit_:
        drive("", pick_pairs, PAIRS)
    assert exit_.value.exit_code == 130 and "Cancelled." in capsys.readouterr().err
