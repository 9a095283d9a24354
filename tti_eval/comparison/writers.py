"""`compare_<timestamp>.json` (the `ComparisonRun` as validated JSON) and `compare_<timestamp>.md` (GitHub-flavoured
tables of the same run, to paste into an issue or a pull request)."""

from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from tti_eval.common.atomic import atomic_write
from tti_eval.common.errors import TTIEvalError

from .results import ComparisonRun, GroupComparison, Leaderboard, PerClassResult

TIED = "≈ best"  # the mark of a model the data cannot tell from the best
BELOW = "▼"  # the mark of a class recall whose interval lies entirely below another model's


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def _table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    """A GFM table; `align` has one character per column, l or r."""
    rule = ["---:" if a == "r" else ":---" for a in align]
    return [f"| {' | '.join(row)} |" for row in ([header, rule] + [[_cell(c) for c in row] for row in rows])]


def _interval(value: float, low: float, high: float, signed: bool = False) -> str:
    number = f"{value:+.4f}" if signed else f"{value:.4f}"
    return f"{number} [{low:.4f}, {high:.4f}]"


def format_p(p: float) -> str:
    """p-values to 3 significant digits; tiny ones in scientific notation rather than a misleading 0.0000."""
    return f"{p:.3g}" if p >= 1e-3 else f"{p:.1e}"


def describe_test(group: GroupComparison) -> str:
    if group.test == "mcnemar":
        return "McNemar's exact test"
    return f"a sign-flip permutation test on per-query scores ({group.permutations} permutations)"


def group_rows(group: GroupComparison) -> list[list[str]]:
    """Rank, model, score [interval], difference to best [interval], adjusted p, tied mark: one row per model."""
    comparisons = {comparison.model: comparison for comparison in group.comparisons}
    rows = []
    for result in group.results:
        found = comparisons.get(result.model)
        if found is None:  # the best itself
            tail = ["best", "", ""]
        else:
            d = found.difference
            tail = [
                _interval(d.value, d.low, d.high, signed=True),
                format_p(found.p_adjusted),
                TIED * found.tied_with_best,
            ]
        rows.append([f"{result.rank:g}", result.model, _interval(result.value, result.low, result.high), *tail])
    return rows


GROUP_HEADER = ["Rank", "Model", "Score [95 % CI]", "Difference to best [95 % CI]", "p (Holm)", "Tied"]


def leaderboard_rows(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    """Mean rank, then wins/ties/losses against every other model (a 'w/t/l' cell per opponent)."""
    models = [standing.model for standing in board.standings]
    cells = {(h.model, h.other): f"{h.wins}/{h.ties}/{h.losses}" for h in board.head_to_head}
    header = ["Model", "Mean rank", "Datasets", *(f"vs {model}" for model in models)]
    rows = [
        [s.model, f"{s.mean_rank:.2f}", str(s.datasets), *(cells.get((s.model, other), "–") for other in models)]
        for s in board.standings
    ]
    return header, rows


def per_class_rows(per_class: list[PerClassResult]) -> tuple[list[str], list[list[str]]]:
    """Classes x models: each class's support, then each model's recall [interval], marked where that interval lies
    entirely below another model's interval for the same class ("–" for a class with no image)."""
    rows = []
    for k, found in enumerate(per_class[0].classes):
        recalls = [model.classes[k].recall for model in per_class]
        best_low = max((r.low for r in recalls if r is not None), default=None)
        row = [found.name, str(found.support)]
        for recall in recalls:
            if recall is None:
                row.append("–")
                continue
            below = best_low is not None and recall.high < best_low
            row.append(f"{BELOW + ' ' if below else ''}{recall.value:.3f} [{recall.low:.3f}, {recall.high:.3f}]")
        rows.append(row)
    return ["Class", "Images", *(model.model for model in per_class)], rows


def render_markdown(run: ComparisonRun) -> str:
    confidence = f"{run.confidence:.0%}"
    lines = [
        "# Model comparison",
        "",
        f"Differences are model minus best with paired {confidence} bootstrap intervals ({run.n_resamples} "
        f"resamples, seed {run.seed}); p-values are Holm-adjusted per dataset. {TIED}: adjusted p ≥ {run.alpha:g}, "
        "the data cannot tell this model from the best.",
    ]
    for group in run.groups:
        test = describe_test(group)
        lines += [
            "",
            f"## {group.dataset} · {group.evaluator} · {group.split}",
            "",
            f"{group.metric}, {group.n} images, {test}.",
            "",
            *_table(GROUP_HEADER, group_rows(group), "rlrrrl"),
        ]
    for board in run.leaderboards:
        header, rows = leaderboard_rows(board)
        lines += [
            "",
            f"## Across datasets · {board.evaluator} · {board.split}",
            "",
            "Wins/ties/losses of the row's model against the column's; a tie is not significant after Holm.",
            "",
            *_table(header, rows, "lrr" + "r" * (len(header) - 3)),
        ]
    versions = ", ".join(f"{name} {version}" for name, version in run.versions.items())
    lines += ["", f"_Created {run.created}; {versions}._", ""]
    return "\n".join(lines)


def save_comparison(run: ComparisonRun, folder: Path, now: datetime | None = None) -> tuple[Path, Path]:
    """Write `compare_<timestamp>.json` and `.md` into `folder`; returns both paths."""
    stamp = (now or datetime.now()).strftime("%Y-%m-%d_%H-%M-%S")
    json_path, markdown_path = folder / f"compare_{stamp}.json", folder / f"compare_{stamp}.md"
    atomic_write(json_path, lambda handle: handle.write(run.model_dump_json(indent=2).encode("utf-8")))
    atomic_write(markdown_path, lambda handle: handle.write(render_markdown(run).encode("utf-8")))
    return json_path, markdown_path


def load_comparison(path: Path) -> ComparisonRun:
    """Read a saved `compare_<timestamp>.json`, with one sentence for a file that is not one."""
    try:
        return ComparisonRun.model_validate_json(path.read_bytes())
    except OSError as error:
        raise TTIEvalError(f"Cannot read {path} ({error.strerror}); give the path of a saved compare JSON.") from None
    except ValidationError as error:
        raise TTIEvalError(
            f"{path} is not a saved comparison ({error.error_count()} problems, first at "
            f"{'.'.join(map(str, error.errors()[0]['loc'])) or 'the top level'}); give a compare_<timestamp>.json."
        ) from None
