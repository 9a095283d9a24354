"""`compare_models` at scale: wall time and peak memory of comparing M models on D datasets of N validation images.

Default size (issue 13): 20 models x 5 datasets x 10k images, 1,000 resamples. Synthetic outcomes: per dataset, one
label per image over `--classes` classes, and per model a prediction that is right with the model's accuracy
(spread over 0.80-0.90, so that some models are tied with the best and some are not); I2IR-like per-query scores
for the sign-flip runs. Each run is measured in a fresh process, so that its peak RSS is its own.

Runs:
- `correct`: 0/1 outcomes (McNemar), paired bootstrap intervals, Holm, cross-dataset wins/ties/losses.
- `scores`: per-query scores (sign-flip permutation test) with the same summaries.
- `correct+per_class`: `correct` plus per-class recall intervals, precision and the confusion matrix per model.

`seconds` times `compare_models` alone; `peak_rss_gib` is the process's peak, `baseline_rss_gib` the interpreter,
libraries and synthetic inputs before the call, `extra_rss_gib` their difference (target: < 30 s, < 1 GiB).

    python benchmarks/compare_scale.py [--models 20] [--datasets 5] [--images 10000] [--classes 100]
                                       [--resamples 1000] [--runs correct,scores,correct+per_class]
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

RUNS = ["correct", "scores", "correct+per_class"]
GIB = 1024**3


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # ru_maxrss is in KiB on Linux


def current_rss_gib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / GIB


def measure(run: str, models: int, datasets: int, images: int, classes: int, resamples: int) -> dict:
    import numpy as np

    from tti_eval.comparison import ModelOutcomes, compare_models

    rng = np.random.default_rng(0)
    accuracies = np.linspace(0.9, 0.8, models)
    outcomes = []
    for d in range(datasets):
        labels = rng.integers(0, classes, images)
        for m, accuracy in enumerate(accuracies):
            common = dict(model=f"model-{m:02d}", dataset=f"dataset-{d}", split="validation", metric="accuracy")
            if run == "scores":
                scores = np.clip(rng.normal(accuracy - 0.1, 0.2, images), 0, 1)
                outcomes.append(
                    ModelOutcomes(**common, evaluator="I2IR", higher_is_better=True, kind="scores", outcomes=scores)
                )
                continue
            predictions = np.where(rng.random(images) < accuracy, labels, rng.integers(0, classes, images))
            per_class = dict(labels=labels, predictions=predictions) if run == "correct+per_class" else {}
            outcomes.append(
                ModelOutcomes(
                    **common,
                    evaluator="wKNN",
                    higher_is_better=True,
                    kind="correct",
                    outcomes=(predictions == labels).astype(np.int8),
                    **per_class,
                )
            )
    baseline = current_rss_gib()
    start = time.perf_counter()
    result = compare_models(outcomes, n_resamples=resamples)
    seconds = time.perf_counter() - start
    peak = peak_rss_gib()
    tied = sum(c.tied_with_best for g in result.groups for c in g.comparisons)
    return {
        "run": run,
        "seconds": round(seconds, 2),
        "peak_rss_gib": round(peak, 3),
        "baseline_rss_gib": round(baseline, 3),
        "extra_rss_gib": round(peak - baseline, 3),
        "groups": len(result.groups),
        "comparisons": sum(len(g.comparisons) for g in result.groups),
        "tied_with_best": tied,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--datasets", type=int, default=5)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = (args.models, args.datasets, args.images, args.classes, args.resamples)
    if args.child:
        print(json.dumps(measure(args.child, *sizes)))
        return
    report = {
        "models": args.models,
        "datasets": args.datasets,
        "images": args.images,
        "classes": args.classes,
        "resamples": args.resamples,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "runs": [],
    }
    for run in args.runs.split(","):
        if run not in RUNS:
            parser.error(f"unknown run {run!r}; choose from {', '.join(RUNS)}")
        command = [sys.executable, __file__, "--child", run, *sys.argv[1:]]
        output = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
        report["runs"].append(json.loads(output.strip().splitlines()[-1]))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
