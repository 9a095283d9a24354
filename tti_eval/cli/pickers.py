"""Interactive fuzzy pickers for when no pair is named on the command line (InquirerPy, imported on use)."""

import sys
from collections.abc import Sequence

from tti_eval.common import EmbeddingDefinition
from tti_eval.common.errors import TTIEvalError

_MULTI_HINT = "type to filter, tab to select, enter to confirm"


def require_terminal(what: str) -> None:
    if not sys.stdin.isatty():
        raise TTIEvalError(f"No terminal to pick {what} in; name them with --model-dataset MODEL/DATASET.")


def pick_pairs(
    pairs: Sequence[EmbeddingDefinition], message: str = "Pick model/dataset pairs"
) -> list[EmbeddingDefinition]:
    """Fuzzy multi-select over pairs, shown as `dataset  model`."""
    from InquirerPy import inquirer
    from InquirerPy.base.control import Choice

    if not pairs:
        return []
    width = max(len(p.dataset) for p in pairs) + 2
    choices = [Choice(value=p, name=f"{p.dataset:<{width}}{p.model}") for p in pairs]
    return (
        inquirer.fuzzy(
            message=f"{message} ({_MULTI_HINT}):", choices=choices, multiselect=True, vi_mode=False
        ).execute()
        or []
    )


def pick_one(options: Sequence[str], message: str) -> str:
    from InquirerPy import inquirer

    if not options:
        raise TTIEvalError(f"{message}: there is nothing to choose from.")
    picked = inquirer.fuzzy(message=f"{message}:", choices=list(options)).execute()
    if picked is None:  # enter while the filter matched nothing
        raise TTIEvalError(f"{message}: nothing was picked.")
    return picked


def pick_some(options: Sequence[str], message: str) -> list[str]:
    from InquirerPy import inquirer

    if not options:
        return []
    prompt = inquirer.fuzzy(message=f"{message} ({_MULTI_HINT}):", choices=list(options), multiselect=True)
    return prompt.execute() or []


def pick_two(options: Sequence[str], message: str) -> tuple[str, str]:
    first = pick_one(options, f"{message}: from")
    second = pick_one([o for o in options if o != first], f"{message}: to")
    return first, second
