"""In-process build against `build --engine ray` on a local Ray, and the per-core decode rate behind the capacity
model in benchmarks/README.md.

Both engines build the same split end to end through `build_embeddings` (shards, streamed final file) with
OpenCLIP ViT-B-32 (random init, offline) on N digits images (224×224 PNG). Ray's figures are split into the
session start (`ray.init`, paid once per `tti-eval build`) and the build itself (which includes the actor pool's
start and model load, paid once per split). Target: Ray's build ≤ 1.15 × the in-process build.

The decode rate is one core decoding and preprocessing (ViT-B-32's CLIP transform) a 500×375 JPEG photo made from
scikit-learn's bundled sample photo, the typical size of a photo dataset.

    python benchmarks/ray_build.py [--images 512] [--batch-size 32]
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
from build_throughput import make_images  # noqa: E402


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

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

        make_images(Path(tmp) / "images", args.images)
        ModelProvider.register_model(OpenCLIPModel, "bench-vit-b-32", title_in_source="ViT-B-32", device="cpu")
        DatasetProvider.register_dataset(ImageFolderDataset, "bench-images", title_in_source=str(Path(tmp) / "images"))
        pair = EmbeddingDefinition(model="bench-vit-b-32", dataset="bench-images")
        model = ModelProvider.get_model(pair.model)

        def timed_build(**options) -> float:
            embedding_path(pair, Split.TRAIN).unlink(missing_ok=True)
            start = time.perf_counter()
            build_embeddings(pair, [Split.TRAIN], batch_size=args.batch_size, **options)
            return time.perf_counter() - start

        timed_build(load_model=lambda: model)  # warm-up: file cache, allocator
        in_process = timed_build(load_model=lambda: model)

        start = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        ray.data.DataContext.get_current().enable_progress_bars = False
        ray_init = time.perf_counter() - start
        engine = RayEngine(pair.model, batch_size=args.batch_size)
        ray_builds = [timed_build(engine=engine) for _ in range(2)]
        ray.shutdown()
        rate = decode_rate(model.get_image_preprocessor())

    ray_build = min(ray_builds)  # other work on a shared machine only ever adds time
    print(
        json.dumps(
            {
                "images": args.images,
                "batch_size": args.batch_size,
                "cpus": os.cpu_count(),
                "in_process_s": round(in_process, 2),
                "in_process_images_per_s": round(args.images / in_process, 2),
                "ray_init_s": round(ray_init, 2),
                "ray_build_s": [round(s, 2) for s in ray_builds],
                "ray_images_per_s": round(args.images / ray_build, 2),
                "ray_overhead": round(ray_build / in_process - 1, 3),
                "target_ray_overhead": 0.15,
                "decode_preprocess_500x375_jpeg_per_core_images_per_s": round(rate, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
