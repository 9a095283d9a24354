"""Time the 2-D reductions and the morph GIF, and the GIF's size and peak memory; prints JSON.

    python benchmarks/reduction.py [--sizes 2000,10000] [--reductions umap,pca,tsne] [--gif-points 270,2000]
                                   [--skip-baseline]

Every measurement runs in a fresh Python process, so imports, numba compilation (UMAP's first call) and peak RSS
belong to that measurement alone; each child reports its own `ru_maxrss`. Inputs are synthetic: unit vectors
scattered around 20 class centres in 512 dimensions, like a model that separates its classes. Each GIF is the
product's default (`NUM_FRAMES` frames of `FIGURE_SIZE` at `DPI`) of a map of 10 classes: 270 points is the size of
the demo's validation split, 2,000 a larger map. `baseline_gif` renders 2,000 points the way the original tool did
(matplotlib `FuncAnimation` saved through `PillowWriter`, which holds every frame, 78 frames of 1200 x 700), so the
two can be compared on the same machine under the same load.
"""

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GIF_POINTS = (270, 2_000)
BASELINE_POINTS = 2_000
BASELINE_FRAMES = 78
NUM_CLASSES = 20
LIBRARIES = {"umap": "umap", "pca": "sklearn.decomposition", "tsne": "sklearn.manifold"}


def _embeddings(n: int, dim: int = 512, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, n)
    images = rng.normal(size=(NUM_CLASSES, dim))[labels] + 0.8 * rng.normal(size=(n, dim))
    return (images / np.linalg.norm(images, axis=1, keepdims=True)).astype(np.float32), labels


def _maps(n: int):
    """Two 2-D maps of the same points (one per model), aligned as the product aligns them, and their labels."""
    import numpy as np

    from tti_eval.plotting.animation import align, standardise

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, n)
    start = rng.normal(size=(10, 2))[labels] * 4 + rng.normal(size=(n, 2))
    end = rng.normal(size=(10, 2))[labels] * 4 + 1.5 * rng.normal(size=(n, 2))
    start = standardise(start)
    return start, align(standardise(end), start), labels


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure_reduction(title: str, n: int) -> dict:
    images, _ = _embeddings(n)
    from tti_eval.plotting.reduction import REDUCERS

    result: dict = {"reduction": title, "points": n, "dim": images.shape[1]}
    began = time.perf_counter()
    importlib.import_module(LIBRARIES[title])  # reported apart from the fit: UMAP's import alone takes seconds
    result["import_s"] = round(time.perf_counter() - began, 2)
    began = time.perf_counter()
    REDUCERS[title](images, 42)
    result["first_call_s"] = round(time.perf_counter() - began, 2)
    if title == "umap":  # the first call compiles with numba; the second shows the cost of a warm process
        began = time.perf_counter()
        REDUCERS[title](images, 42)
        result["warm_call_s"] = round(time.perf_counter() - began, 2)
    result["peak_rss_mib"] = round(_peak_rss_mib(), 1)
    return result


def measure_gif(folder: Path, points: int) -> dict:
    began = time.perf_counter()
    from PIL import Image

    from tti_eval.plotting.animation import NUM_FRAMES, create_morph_figure, save_gif

    imported = time.perf_counter() - began
    start, end, labels = _maps(points)
    path = folder / "morph.gif"
    began = time.perf_counter()
    morph = create_morph_figure(
        start, end, labels, [f"class {i}" for i in range(10)], "model-a", "model-b", "model-a \u2194 model-b"
    )
    save_gif(morph, path, NUM_FRAMES)
    seconds = time.perf_counter() - began
    with Image.open(path) as gif:
        frames, size = gif.n_frames, gif.size
    return {
        "points": points,
        "frames": frames,
        "size": list(size),
        "import_s": round(imported, 2),
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "file_bytes": path.stat().st_size,
    }


def measure_baseline_gif(folder: Path) -> dict:
    """The original tool's way: FuncAnimation over a scatter, saved with PillowWriter (all frames kept in memory)."""
    import numpy as np
    from matplotlib.animation import FuncAnimation, PillowWriter
    from matplotlib.figure import Figure

    from tti_eval.plotting.animation import class_colours, morph_times

    start, end, labels = _maps(BASELINE_POINTS)
    began = time.perf_counter()
    figure = Figure(figsize=(12, 7), dpi=100)
    axes = figure.add_subplot()
    axes.set_axis_off()
    both = np.concatenate([start, end])
    axes.set_xlim(both[:, 0].min(), both[:, 0].max())
    axes.set_ylim(both[:, 1].min(), both[:, 1].max())
    scatter = axes.scatter(*start.T, c=class_colours(10)[labels])

    def update(t: float):
        scatter.set_offsets((1 - t) * start + t * end)
        return (scatter,)

    animation = FuncAnimation(figure, update, frames=morph_times(BASELINE_FRAMES))
    animation.save(folder / "baseline.gif", writer=PillowWriter(fps=5))
    return {
        "points": BASELINE_POINTS,
        "frames": BASELINE_FRAMES,
        "seconds": round(time.perf_counter() - began, 2),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "file_bytes": (folder / "baseline.gif").stat().st_size,
    }


def _child(*args: str) -> dict:
    """Run one measurement in a fresh interpreter and return its JSON."""
    command = [sys.executable, __file__, "--child", *args]
    completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "MPLBACKEND": "Agg"})
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,10000", help="numbers of points to reduce, comma-separated")
    parser.add_argument("--reductions", default="umap,pca,tsne", help="reductions to time, comma-separated")
    parser.add_argument(
        "--gif-points", default=",".join(map(str, GIF_POINTS)), help="points of each GIF's map, comma-separated"
    )
    parser.add_argument("--skip-baseline", action="store_true", help="do not time the original tool's GIF writer")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind, *rest = args.child
        with tempfile.TemporaryDirectory() as folder:
            if kind == "reduction":
                result = measure_reduction(rest[0], int(rest[1]))
            elif kind == "gif":
                result = measure_gif(Path(folder), int(rest[0]))
            else:
                result = measure_baseline_gif(Path(folder))
        print(json.dumps(result))
        return

    report: dict = {"cpus": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
    report["gif"] = [_child("gif", points) for points in args.gif_points.split(",")]
    if not args.skip_baseline:
        report["baseline_gif"] = _child("baseline")
    report["reductions"] = [
        _child("reduction", title, size) for title in args.reductions.split(",") for size in args.sizes.split(",")
    ]
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
