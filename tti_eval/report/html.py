"""One self-contained HTML file from a saved comparison: every picture is inlined as base64 and the styles are in
the page, so the file can be mailed, attached to an issue, or opened on a machine with no network, and it prints.
"""

import base64
from collections.abc import Sequence
from html import escape
from pathlib import Path

from tti_eval.common.atomic import atomic_write
from tti_eval.comparison.results import ComparisonRun, GroupComparison, PerClassResult
from tti_eval.comparison.writers import (
    BELOW,
    GROUP_HEADER,
    TIED,
    describe_test,
    group_rows,
    leaderboard_rows,
    per_class_rows,
)
from tti_eval.plotting.confusion import MAX_MATRIX_CLASSES, confusion_figure, confusion_title

from .charts import group_chart, png_bytes

# System font stacks only: a web font would need the network (or megabytes inlined).
_STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #1b1b1b; max-width: 1100px; margin: 0 auto; padding: 1.5rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem;
     border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; } h3 { font-size: 1.05rem; }
.lead { color: #57606a; }
nav ul { columns: 2; padding-left: 1.2rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .9rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: .25rem .55rem; text-align: right; white-space: nowrap; }
th { background: #f6f8fa; } td.name, th.name { text-align: left; }
tr.best td { font-weight: 600; } tr.tied td { background: #eef5fc; }
td.below { color: #a40e26; }
img { max-width: 100%; height: auto; }
figure { margin: .8rem 0; } figcaption { color: #57606a; font-size: .85rem; }
.grid { display: flex; flex-wrap: wrap; gap: 1rem; } .grid figure { flex: 1 1 420px; }
footer { margin-top: 3rem; color: #57606a; font-size: .85rem; border-top: 1px solid #d0d7de; }
@media print {
  body { max-width: none; padding: 0; font-size: 11px; }
  nav { display: none; }
  section.group, figure, table { break-inside: avoid; }
  .scroll { overflow: visible; }
  a { color: inherit; text-decoration: none; }
}
"""


def _image(data: bytes, mime: str, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="data:{mime};base64,{base64.b64encode(data).decode("ascii")}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], row_classes: Sequence[str] = (), name_column=1):
    """An HTML table whose `name_column` (model or class names) is left-aligned; cells are escaped text."""

    def cells(tag: str, row: Sequence[str]) -> str:
        return "".join(
            f"<{tag}{' class=name' if k == name_column else ''}>{escape(str(cell))}</{tag}>"
            for k, cell in enumerate(row)
        )

    body = "".join(
        f'<tr class="{row_classes[k] if k < len(row_classes) else ""}">{cells("td", row)}</tr>'
        for k, row in enumerate(rows)
    )
    return (
        f'<div class="scroll"><table><thead><tr>{cells("th", header)}</tr></thead><tbody>{body}</tbody></table></div>'
    )


def _anchor(group: GroupComparison) -> str:
    return escape(f"{group.dataset}-{group.evaluator}-{group.split}".replace(" ", "_"), quote=True)


def _per_class_table(per_class: list[PerClassResult]) -> str:
    header, rows = per_class_rows(per_class)
    return _table(header, rows, name_column=0)


def _group_section(group: GroupComparison) -> str:
    test = describe_test(group)
    row_classes = ["best"] + ["tied" if c.tied_with_best else "" for c in group.comparisons]
    parts = [
        f'<section class="group" id="{_anchor(group)}">',
        f"<h2>{escape(group.dataset)} · {escape(group.evaluator)} · {escape(group.split)}</h2>",
        f'<p class="lead">{escape(group.metric)} on {group.n} images; p-values from {test}, Holm-adjusted.</p>',
        _table(GROUP_HEADER, group_rows(group), row_classes),
        f"<figure>{_image(png_bytes(group_chart(group)), 'image/png', f'{group.dataset} scores')}</figure>",
    ]
    if group.per_class:
        classes = len(group.per_class[0].classes)
        parts.append("<h3>Per class</h3>")
        if classes <= MAX_MATRIX_CLASSES:
            parts.append(
                f"<p>Recall with its interval; {BELOW} marks a recall whose interval lies entirely below another "
                "model's.</p>"
            )
            parts.append(_per_class_table(group.per_class))
        figures = []
        values = {result.model: result.value for result in group.results}
        for model in group.per_class:
            names = [c.name for c in model.classes]
            title = confusion_title(
                model.model, group.dataset, group.evaluator, group.metric, group.split, values[model.model], group.n
            )
            figure = confusion_figure(model.confusion_matrix, names, title)
            alt = f"confusion of {model.model} on {group.dataset}"
            figures.append(f"<figure>{_image(png_bytes(figure), 'image/png', alt)}</figure>")
        parts.append(f'<div class="grid">{"".join(figures)}</div>')
    parts.append("</section>")
    return "\n".join(parts)


def render_report(run: ComparisonRun, animations: Sequence[Path] = ()) -> str:
    """The report's HTML: leaderboards, one section per (dataset, evaluator, split), the GIFs in `animations`, and
    the run's parameters and versions."""
    contents = "".join(
        f'<li><a href="#{_anchor(g)}">{escape(g.dataset)} · {escape(g.evaluator)} · {escape(g.split)}</a></li>'
        for g in run.groups
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>tti-eval comparison {escape(run.created)}</title><style>{_STYLE}</style></head><body>",
        "<header><h1>Model comparison</h1>",
        f'<p class="lead">Models ranked per dataset by their main metric, with {run.confidence:.0%} bootstrap '
        f"intervals. "
        f"{escape(TIED)} (tied with best): the Holm-adjusted p of its paired test against the best is at least "
        f"{run.alpha:g}, so these data cannot tell it from the best.</p></header>",
        f"<nav><h2>Contents</h2><ul>{contents}</ul></nav>",
    ]
    for board in run.leaderboards:
        header, rows = leaderboard_rows(board)
        parts += [
            f"<section><h2>Across datasets · {escape(board.evaluator)} · {escape(board.split)}</h2>",
            "<p>Mean rank over datasets (1 = best), then wins/ties/losses of the row's model against each column's; "
            "a tie is a difference not significant after Holm's adjustment.</p>",
            _table(header, rows, name_column=0),
            "</section>",
        ]
    parts += [_group_section(group) for group in run.groups]
    if animations:
        figures = "".join(
            f"<figure>{_image(path.read_bytes(), 'image/gif', path.stem)}"
            f"<figcaption>{escape(path.stem)}</figcaption></figure>"
            for path in animations
        )
        parts.append(f'<section><h2>Animations</h2><div class="grid">{figures}</div></section>')
    parameters = [
        ["Created", run.created],
        ["Significance level (alpha)", f"{run.alpha:g}"],
        ["Interval confidence", f"{run.confidence:.0%}"],
        ["Bootstrap resamples", str(run.n_resamples)],
        ["Seed", str(run.seed)],
        *([name, version] for name, version in run.versions.items()),
    ]
    parts += [
        f"<footer><h2>Run parameters and versions</h2>{_table(['Parameter', 'Value'], parameters, name_column=0)}",
        "</footer>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(run: ComparisonRun, path: Path, animations: Sequence[Path] = ()) -> Path:
    """Write `render_report` to `path` (atomically) and return it."""
    text = render_report(run, animations)
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
