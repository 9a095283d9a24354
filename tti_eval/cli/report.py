"""`tti-eval report`: one self-contained HTML file from a saved comparison or evaluation."""

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tti_eval.common.errors import TTIEvalError

from .console import console, user_errors, warn
from .main import app

if TYPE_CHECKING:
    from tti_eval.comparison import ComparisonRun


def latest_saved() -> Path:
    """The newest compare_*.json or eval_*.json in the output folder."""
    from tti_eval.common import get_settings

    output = get_settings().output_path
    found = [*(output / "comparisons").glob("compare_*.json"), *(output / "evaluations").glob("eval_*.json")]
    if not found:
        raise TTIEvalError(
            f"No saved comparison or evaluation in {output}; run `tti-eval compare --save` (or `tti-eval evaluate "
            "--save`) first, or give a file with --from."
        )
    return max(found, key=lambda path: path.stat().st_mtime)


def load_run(path: Path, on_problem=None) -> "ComparisonRun":
    """A saved comparison as it is, or the comparison of a saved evaluation's results (from their outcomes)."""
    import json

    from tti_eval.comparison import compare_results, load_comparison
    from tti_eval.evaluation.records import from_record, load_evaluation

    try:
        top = json.loads(path.read_bytes())
    except OSError as error:
        raise TTIEvalError(f"Cannot read {path} ({error.strerror}); give a saved compare or eval JSON.") from None
    except ValueError:
        raise TTIEvalError(f"{path} is not JSON; give a saved compare_<time>.json or eval_<time>.json.") from None
    if isinstance(top, dict) and "groups" in top:
        return load_comparison(path)
    saved = load_evaluation(path)
    results = [from_record(record) for record in saved.results]
    return compare_results(results, n_resamples=saved.n_resamples, seed=saved.seed, on_problem=on_problem)


def animations_for(run: "ComparisonRun") -> list[Path]:
    """The newest GIF of each (dataset, model, model) that `tti-eval animate` wrote for models of these groups."""
    from tti_eval.common import get_settings

    folder = get_settings().output_path / "animations"
    newest: dict[str, Path] = {}
    for group in run.groups:
        models = {result.model for result in group.results}
        for path in sorted(folder.glob(f"transition_{group.dataset}_*.gif")):
            middle = path.stem[len(f"transition_{group.dataset}_") :]
            # transition_<dataset>_<from>_<to>_<split>_<reduction>_<date>-<time>: the models are what remains
            key = middle.rsplit("_", 3)[0]
            if any(key == f"{a}_{b}" for a in models for b in models if a != b):
                newest[f"{group.dataset}/{key}"] = path
    return list(newest.values())


@app.command()
@user_errors
def report(
    from_: Annotated[
        Path | None,
        typer.Option("--from", help="A saved compare_<time>.json or eval_<time>.json. Default: the newest saved one."),
    ] = None,
) -> None:
    """Write one self-contained HTML report (tables, charts, confusion matrices, animations) from saved results."""
    from tti_eval.common import get_settings
    from tti_eval.report import write_report

    source = from_ or latest_saved()
    run = load_run(source, on_problem=warn)
    if not run.groups:
        raise TTIEvalError(f"{source} holds no results that can be compared; save a comparison with compare --save.")
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    path = write_report(run, get_settings().output_path / "reports" / f"report_{stamp}.html", animations_for(run))
    console.print(f"Saved the report of {source.name} to {path}", highlight=False, soft_wrap=True)
