"""Interactive fuzzy pickers for when no pair is named on the command line (InquirerPy: imported only with them).

Nothing is picked without an explicit tick: Enter with nothing ticked keeps the picker open and says how to tick
(InquirerPy would otherwise return the highlighted line, and a build would start on it). Filter text with spaces
matches each word anywhere in a line, and Ctrl-C prints "Cancelled." and exits with code 130."""

import sys
from collections.abc import Sequence
from typing import Any

import typer
from InquirerPy.prompts.fuzzy import FuzzyPrompt

from tti_eval.common import EmbeddingDefinition
from tti_eval.common.errors import TTIEvalError

from .console import err_console

# One line in a 100-column terminal: wrapped, it broke "Ctrl-C: cancel" in two.
MULTI_KEYS = "Tab: tick · Ctrl-A: tick all · Ctrl-R: invert · type to filter · Enter: confirm · Ctrl-C: cancel"
# A ticked line's mark; InquirerPy's default is the cursor's own ❯, so a ticked line and the cursor looked alike.
TICK = "✓ "
NOTHING_TICKED = "Nothing is ticked: press Tab on each line you want (Ctrl-A ticks all), then Enter."
NAMED_ON_THE_COMMAND_LINE = "name them with --model/--dataset, --model-dataset MODEL/DATASET or --suite FILE"


def require_terminal(what: str, how: str = NAMED_ON_THE_COMMAND_LINE) -> None:
    """Pickers need a terminal; without one (a pipe, CI, a notebook cell) say how to name `what` instead."""
    if not sys.stdin.isatty():
        raise TTIEvalError(f"No terminal to pick {what} in; {how}.")


def words_scorer(needle: str, haystack: str) -> tuple[float, list[int] | None]:
    """fzy's score for one word; for several words, each must match (in any order) and the scores add up."""
    from pfzy import fzy_scorer

    total, indices = 0.0, set()
    for word in needle.split() or [needle]:
        score, hits = fzy_scorer(word, haystack)
        if hits is None:
            return score, None
        total, indices = total + score, indices | set(hits)
    return total, sorted(indices)


class _Picker(FuzzyPrompt):
    """InquirerPy's fuzzy prompt, filtering word by word, whose Tab and arrows do nothing while the filter matches
    nothing (InquirerPy's own stop the picker with an IndexError or ZeroDivisionError there)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.content_control._scorer = words_scorer  # InquirerPy has no option for the scorer

    def _handle_toggle_choice(self, event: Any) -> None:
        if self.content_control.choice_count:
            super()._handle_toggle_choice(event)

    def _handle_down(self, event: Any) -> bool:
        return super()._handle_down(event) if self.content_control.choice_count else True

    def _handle_up(self, event: Any) -> bool:
        return super()._handle_up(event) if self.content_control.choice_count else True


def _execute(prompt: Any) -> Any:
    try:
        return prompt.execute()
    except KeyboardInterrupt:
        err_console.print("Cancelled.")
        raise typer.Exit(130) from None


def _fuzzy(options: Sequence[Any], message: str, instruction: str = "", *, multiselect: bool) -> Any:
    names = [str(option) for option in options]
    prompt = _Picker(
        message=f"{message}:",
        instruction=instruction,
        long_instruction=MULTI_KEYS if multiselect else "type words to filter · Enter: choose · Ctrl-C: cancel",
        choices=[{"name": name, "value": option} for name, option in zip(names, options, strict=True)],
        multiselect=multiselect,
        validate=(lambda picked: bool(picked)) if multiselect else None,
        invalid_message=NOTHING_TICKED,
        transformer=(lambda picked: f"{len(picked)} picked: {', '.join(picked)}") if multiselect else None,
        border=True,
        marker=TICK,
        marker_pl=" " * len(TICK),
    )
    return _execute(prompt)


def offered(what: str, count: int, hidden: int = 0) -> str:
    """A multi-select picker's header note: what its lines are, how many, and how many built ones it hides."""
    note = f"; {hidden} already built, hidden (--include-existing shows them)" if hidden else ""
    return f"({what}, {count} offered{note})"


def pick_pairs(
    pairs: Sequence[EmbeddingDefinition], message: str = "Pick model/dataset pairs", hidden: int = 0
) -> list[EmbeddingDefinition]:
    """Fuzzy multi-select over pairs shown as MODEL/DATASET, grouped by model; `hidden` built pairs not offered are
    counted in the header."""
    if not pairs:
        return []
    models = list(dict.fromkeys(p.model for p in pairs))
    ordered = sorted(pairs, key=lambda p: models.index(p.model))
    return _fuzzy(ordered, message, offered("MODEL/DATASET", len(pairs), hidden), multiselect=True)


def pick_one(options: Sequence[str], message: str) -> str:
    if not options:
        raise TTIEvalError(f"{message}: there is nothing to choose from.")
    picked = _fuzzy(options, message, multiselect=False)
    if picked is None:  # enter while the filter matched nothing
        raise TTIEvalError(f"{message}: nothing was picked.")
    return picked


def pick_some(options: Sequence[str], message: str, what: str = "choices", hidden: int = 0) -> list[str]:
    """Fuzzy multi-select over `options`, its header naming `what` they are, their number and the `hidden` ones."""
    if not options:
        return []
    return _fuzzy(options, message, offered(what, len(options), hidden), multiselect=True)


def pick_animation_models(models: Sequence[str]) -> tuple[str, str]:
    """`animate`'s FROM_MODEL, then its TO_MODEL among the others, each asked for by its argument's name."""
    first = pick_one(models, "FROM_MODEL, whose map the animation starts from")
    second = pick_one([m for m in models if m != first], f"TO_MODEL, whose map {first}'s morphs into")
    return first, second
