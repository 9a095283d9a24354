"""In-process build against `build --engine ray` on a local Ray, and the per-core decode rate behind the capacity
model in benchmarks/README.md.

Both engines build the same split end to end through `build_embeddings` (shards, streamed final file) with
OpenCLIP ViT-B-32 (random init, offline) on N digits images (224×224 PNG), interleaved in one invocation (a warm-up,
then in-process, Ray, in-process, Ray, ...) so that both see the same load on a shared machine. Each build is split
into its fixed start-up and its steady state from the times at which its images arrive: the steady rate is the
images after the first batch over the time after it; start-up is the time to the first batch beyond what that batch
costs at the steady rate (Ray: the actor pool's start and model load, paid once per split; in-process: the
DataLoader's); finish is the time from the last image to the final file. `ray.init` (once per `tti-eval build`) is
reported apart. Target: Ray's steady rate ≥ in-process's / 1.15 (overhead ≤ 15 %).

The decode rate is one core decoding and preprocessing (ViT-B-32's CLIP transform) a 500×375 JPEG photo made from
scikit-learn's bundled sample photo, the typical size of a photo dataset.

    python benchmarks/ray_build.py [--images 512] [--batch-size 32] [--rounds 2]
"""

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from build_throughput import make_digits  # noqa: E402


def decode_rate(preprocess, seconds: float = 5.0) -> float:
    """Images per second one core decodes and preprocesses (500×375 JPEG, quality 90)."""
    import torch
    from PIL import Image
    from sklearn.datasets import load_sample_image

    buffer = io.BytesIO()
    Image.fromarray(load_sample_image("china.jpg")).resize((500, 375)).save(buffer, "JPEG", quality=90)
    data = buffer.getvalue()
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        preprocess([Image.open(io.BytesIO(data)).convert("RGB")])
        count += 1
    torch.set_num_threads(previous)
    return count / (time.perf_counter() - start)


def _phases(start: float, arrivals: list[tuple[float, int]], end: float) -> dict:
    """Start-up, steady rate and finish of one build, from (time, images done) at each batch's arrival."""
    (first_t, first_done), (last_t, last_done) = arrivals[0], arrivals[-1]
    if len(arrivals) < 2:
        raise SystemExit(f"All {last_done} images arrived at once: use more images for a steady rate.")
    rate = (last_done - first_done) / (last_t - first_t)
    return {
        "total_s": round(end - start, 2),
        "startup_s": round(first_t - start - first_done / rate, 2),
        "steady_images_per_s": round(rate, 2),
        "finish_s": round(end - last_t, 2),
    }


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return (ordered[(len(values) - 1) // 2] + ordered[len(values) // 2]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="in-process + Ray pairs, interleaved")
    args = parser.parse_args()
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TTI_EVAL_CACHE_PATH"] = str(Path(tmp) / "cache")
        import ray

        from tti_eval.common import EmbeddingDefinition, Split
        from tti_eval.common.cache import embedding_path
        from tti_eval.compute import build_embeddings
        from tti_eval.dataset import DatasetProvider
        from tti_eval.dataset.types.image_folder import ImageFolderDataset
        from tti_eval.model import ModelProvider
        from tti_eval.model.types.open_clip_model import OpenCLIPModel
        from tti_eval.ray_engine import RayEngine

        make_digits(Path(tmp) / "images", args.images)
        ModelProvider.register_model(OpenCLIPModel, "bench-vit-b-32", title_in_source="ViT-B-32", device="cpu")
        DatasetProvider.register_dataset(ImageFolderDataset, "bench-images", title_in_source=str(Path(tmp) / "images"))
        pair = EmbeddingDefinition(model="bench-vit-b-32", dataset="bench-images")
        model = ModelProvider.get_model(pair.model)

        def timed_build(**options) -> dict:
            embedding_path(pair, Split.TRAIN).unlink(missing_ok=True)
            arrivals: list[tuple[float, int]] = []
            start = time.perf_counter()
            build_embeddings(
                pair,
                [Split.TRAIN],
                batch_size=args.batch_size,
                progress=lambda split, done, total, resumed: done and arrivals.append((time.perf_counter(), done)),
                **options,
            )
            return _phases(start, arrivals, time.perf_counter())

        timed_build(load_model=lambda: model)  # warm-up: file cache, allocator

        start = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        ray.data.DataContext.get_current().enable_progress_bars = False
        ray_init = time.perf_counter() - start
        engine = RayEngine(pair.model, batch_size=args.batch_size)
        runs: dict[str, list[dict]] = {"in_process": [], "ray": []}
        for _ in range(args.rounds):
            runs["in_process"].append(timed_build(load_model=lambda: model))
            runs["ray"].append(timed_build(engine=engine))
        ray.shutdown()
        rate = decode_rate(model.get_image_preprocessor())

    steady = {name: _median([r["steady_images_per_s"] for r in done]) for name, done in runs.items()}
    startup = {name: _median([r["startup_s"] for r in done]) for name, done in runs.items()}
    print(
        json.dumps(
            {
                "images": args.images,
                "batch_size": args.batch_size,
                "cpus": os.cpu_count(),
                "load_average_before_after": [load_before, os.getloadavg()],
                "runs_in_order": [
                    {"engine": name, **done[i]} for i in range(args.rounds) for name, done in runs.items()
                ],
                "ray_init_s": round(ray_init, 2),
                "steady_images_per_s_median": steady,
                "startup_s_median": startup,
                "ray_steady_overhead": round(steady["in_process"] / steady["ray"] - 1, 3),
                "target_ray_overhead": 0.15,
                "ray_fixed_startup_s": round(startup["ray"] - startup["in_process"], 2),
                "decode_preprocess_500x375_jpeg_per_core_images_per_s": round(rate, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
