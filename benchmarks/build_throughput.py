"""Build throughput: the full pipeline (decode → batched preprocessing in workers → forward) against its floors.

Image cases, each in a temporary image-folder tree:
- `digits`: N real digits images (scikit-learn) upscaled to 224×224 PNGs;
- `photo-500x375`: N JPEG photos cut from scikit-learn's sample photos (china.jpg, flower.jpg) at 500×375;
- `photo-4000x3000`: phone-sized JPEGs (crops of the same photos upscaled to 4000×3000 with sensor-like noise).

Two regimes, each measured in a fresh process so peak RSS belongs to one measurement:
- `vit-b-32`: OpenCLIP ViT-B-32 (random init, offline); compute-bound on a CPU. Floor: the bare forward pass on
  ready tensors, same batch size and threads. Target: full / bare ≥ 0.95.
- `tiny`: a model whose forward costs almost nothing (a GPU's regime, where decoding and preprocessing decide the
  speed). Floor: a bare loop over all cores (a process pool that reads, decodes with Pillow and applies open_clip's
  transform, no tti-eval code). Target ≥ 0.8. On photos it is also run with `--draft-decode` on both sides (the floor
  then decodes with the engine's own `decode_image`, as ours does).

Each case also reports each stage's time per image on one core (read, decode, decode with draft, resize, to-tensor,
forward), so the bottleneck is visible, and for photos what draft decoding changes: the model input's mean absolute
difference in 8-bit levels, and for ViT-B-32 (random init: the only CLIP available offline) the cosine between
embeddings and the embedding change relative to the median distance between different images.

    python benchmarks/build_throughput.py [--cases digits,photo-500x375,photo-4000x3000] [--images 512]
        [--large-images 32] [--batch-size 32] [--models vit-b-32,tiny] [--repeat 2] [--original PATH]

Workers: both models get the engine's own choice (what `tti-eval build` does on a CPU: the first `PROBE_IMAGES` images
are timed on one thread and `workers_for_stage_times` picks the workers for the rest); each result reports those
times and the workers chosen.

`--original PATH` also measures the original tti-eval (github.com/encord-team/text-to-image-eval, a checkout at PATH,
run with this environment's packages plus the two it needs that this project dropped, e.g. `pip install --target
DIR natsort tabulate` and `PYTHONPATH=DIR`) on the same images with the same `tiny` model: its own `compute_embeddings`
(datasets' imagefolder loader, open_clip's transform per image, batch 50, no workers). The original and ours run in
turn, each in its own process, `--rounds` times, so that load on a shared machine falls on both alike.
"""

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 224, "layers": 1, "width": 32, "head_width": 16, "patch_size": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
ARCHITECTURES = {"vit-b-32": "ViT-B-32", "tiny": "bench-tiny"}


CASES = {"digits": None, "photo-500x375": (500, 375), "photo-4000x3000": (4000, 3000)}


def make_digits(root: Path, count: int) -> None:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in range(count):
        label = int(digits.target[i % len(digits.target)])
        pixels = (digits.images[i % len(digits.images)] * (255 / 16)).astype(np.uint8)
        folder = root / "train" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).convert("RGB").resize((224, 224), Image.Resampling.BICUBIC).save(folder / f"{i}.png")


def make_photos(root: Path, count: int, size: tuple[int, int]) -> None:
    """Distinct JPEG photos of `size`: random 4:3 crops (and mirror images) of scikit-learn's two sample photos,
    resized to `size`; enlarged ones get Gaussian noise (sigma 3) so that they compress, and decode, like camera
    photos rather than smooth upscales. Quality 90, the usual camera setting."""
    import numpy as np
    from PIL import Image, ImageOps
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(0)
    sources = [Image.fromarray(image) for image in load_sample_images().images]
    for i in range(count):
        source = sources[i % len(sources)]
        height = int(rng.integers(300, source.height + 1))
        width = min(source.width, height * 4 // 3)
        left, top = int(rng.integers(0, source.width - width + 1)), int(rng.integers(0, source.height - height + 1))
        photo = source.crop((left, top, left + width, top + height)).resize(size, Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            photo = ImageOps.mirror(photo)
        if size[0] > source.width:
            noisy = np.asarray(photo, dtype=np.float32) + rng.normal(0, 3, (size[1], size[0], 3)).astype(np.float32)
            photo = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        folder = root / "train" / f"photo{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        photo.save(folder / f"{i}.jpg", quality=90)


def _setup(model_key: str, root: Path, config_dir: Path):
    import open_clip

    from tti_eval.common import Split
    from tti_eval.dataset import DatasetProvider
    from tti_eval.dataset.types.image_folder import ImageFolderDataset
    from tti_eval.model import ModelProvider
    from tti_eval.model.types.open_clip_model import OpenCLIPModel

    open_clip.add_model_config(config_dir)
    ModelProvider.register_model(OpenCLIPModel, "bench-model", title_in_source=ARCHITECTURES[model_key], device="cpu")
    DatasetProvider.register_dataset(ImageFolderDataset, "bench-images", title_in_source=str(root))
    return ModelProvider.get_model("bench-model"), DatasetProvider.get_dataset("bench-images", Split.ALL)


_bare_transform = None
_bare_draft_size: int | None = None


def _bare_init(transform, draft_size: int | None) -> None:
    import torch

    global _bare_transform, _bare_draft_size
    torch.set_num_threads(1)
    _bare_transform, _bare_draft_size = transform, draft_size


def _bare_item(path: str):
    """The floor's work for one image, written with Pillow and open_clip's transform only (with draft, the same
    `decode_image` the engine runs)."""
    from PIL import Image

    from tti_eval.dataset.images import decode_image

    if _bare_draft_size:
        return _bare_transform(decode_image(path, path, "floor", _bare_draft_size))
    with Image.open(path) as image:
        return _bare_transform(image.convert("RGB"))


def _timed(run, repeat: int) -> tuple[float, list[float]]:
    run()  # warm-up: file cache, allocator, lazy initialisation, worker start-up paths
    all_seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        all_seconds.append(round(time.perf_counter() - start, 3))
    return min(all_seconds), all_seconds  # other work on a shared machine only ever adds time


def _timed_result(n: int, run, repeat: int) -> dict:
    import torch

    seconds, all_seconds = _timed(run, repeat)
    return {
        "images": n,
        "seconds": seconds,
        "all_seconds": all_seconds,
        "images_per_s": round(n / seconds, 2),
        "threads": torch.get_num_threads(),
    }


def measure_original(checkout: Path, model_key: str, root: Path, config_dir: Path, repeat: int) -> dict:
    """The original tool's build of the images at `root`, imported from `checkout` instead of this tree."""
    # Its package has no __init__.py: drop this project from the path so that the checkout's namespace package loads.
    sys.path[:] = [str(checkout)] + [p for p in sys.path if not (Path(p) / "tti_eval" / "__init__.py").is_file()]
    os.environ["TTI_EVAL_CACHE_PATH"] = str(root.parent / "original-cache")
    for name in ("natsort", "tabulate"):
        if importlib.util.find_spec(name) is None:
            sys.exit(f"The original tool needs {name}, which this environment lacks; see --original in --help.")
    import open_clip

    from tti_eval.common import Split
    from tti_eval.compute import compute_embeddings
    from tti_eval.dataset.types.hugging_face import HFDataset
    from tti_eval.model.types.open_clip_model import OpenCLIPModel

    assert Path(open_clip.__file__).is_file() and str(checkout) in str(sys.modules["tti_eval.compute"].__file__)
    open_clip.add_model_config(config_dir)
    model = OpenCLIPModel("bench-model", device="cpu", title_in_source=ARCHITECTURES[model_key])
    dataset = HFDataset("bench-images", split=Split.ALL, title_in_source=str(root))
    return _timed_result(len(dataset), lambda: compute_embeddings(model, dataset), repeat)


def measure(model_key: str, mode: str, root: Path, config_dir: Path, batch_size: int, repeat: int, draft: bool) -> dict:
    """One measurement, run in its own process by `main`: a warm-up run, then the fastest of `repeat` timed runs."""
    import multiprocessing

    import torch

    from tti_eval import compute
    from tti_eval.common.malloc import freed_memory_kept
    from tti_eval.compute import compute_embeddings, draft_min_size

    model, dataset = _setup(model_key, root, config_dir)
    n = len(dataset)
    probes: list[dict] = []
    if mode == "stages":
        return stage_times(model, dataset, batch_size)
    if mode == "full":
        choose = compute.workers_for_stage_times

        def recorded(preprocess: float, forward: float, cores: int) -> int:
            workers = choose(preprocess, forward, cores)
            probes.append(
                {"decode_preprocess_s": round(preprocess, 4), "forward_s": round(forward, 4), "workers": workers}
            )
            return workers

        compute.workers_for_stage_times = recorded  # reports what the engine measured and chose

        def run() -> None:
            compute_embeddings(model, dataset, batch_size=batch_size, draft_decode=draft)

    elif mode == "bare-forward":
        preprocess = model.get_image_preprocessor()
        images = [dataset.get_image_and_label(i)[0] for i in range(n)]
        batches = [preprocess(images[i : i + batch_size]) for i in range(0, n, batch_size)]

        def run() -> None:
            with freed_memory_kept():  # as the engine runs its forward passes
                for batch in batches:
                    model.embed_images(batch)

    elif mode == "bare-loop":
        workers = os.cpu_count() or 1
        paths = [str(path) for path, _ in dataset._items]
        pool = multiprocessing.get_context("fork").Pool(
            workers, _bare_init, (model.transform, draft_min_size(model) if draft else None)
        )

        def run() -> None:
            batch = []
            for tensor in pool.imap(_bare_item, paths, chunksize=4):
                batch.append(tensor)
                if len(batch) == batch_size:
                    torch.stack(batch)
                    batch = []

    else:
        raise ValueError(mode)
    result = _timed_result(n, run, repeat)
    if mode == "bare-loop":
        result["workers"] = workers
    if probes:
        result["probe_one_thread"] = probes  # one per run, the warm-up's first
    return result


def stage_times(model, dataset, batch_size: int, count: int = 64) -> dict:
    """Milliseconds per image of each stage on one core, over the first `count` images, as the engine runs them."""
    import numpy as np
    import torch

    from tti_eval.compute import draft_min_size
    from tti_eval.dataset.images import decode_image

    torch.set_num_threads(1)
    paths = [path for path, _ in dataset._items[:count]]
    preprocess = model.get_image_preprocessor()
    times: dict[str, float] = {}

    def clock(name: str, work):
        start = time.perf_counter()
        result = work()
        times[name] = round((time.perf_counter() - start) * 1000 / len(paths), 2)
        return result

    def batched(work, items: list) -> list:
        return [work(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]

    data = clock("read", lambda: [path.read_bytes() for path in paths])
    decoded = {
        "": clock("decode", lambda: [decode_image(b, "", "") for b in data]),
        "_draft": clock("decode_draft", lambda: [decode_image(b, "", "", draft_min_size(model)) for b in data]),
    }

    def to_tensor(images: list) -> torch.Tensor:  # the batch's 8-bit pixels as the model's float input
        return preprocess.model_input(preprocess._pack(images))

    inputs, features = {}, {}
    for key, images in decoded.items():
        resized = clock(f"resize{key}", lambda images=images: [preprocess._per_image(image) for image in images])
        inputs[key] = torch.cat(clock(f"to_tensor{key}", lambda r=resized: batched(to_tensor, r)))
        features[key] = np.concatenate(batched(model.embed_images, inputs[key]))
    clock("forward", lambda: batched(model.embed_images, inputs[""]))
    result: dict = {"ms_per_image_one_core": times, "images": len(paths)}
    images, drafts = decoded[""], decoded["_draft"]
    if images[0].size != drafts[0].size:
        full_inputs, draft_inputs = inputs[""], inputs["_draft"]
        std = torch.as_tensor(model.transform.transforms[-1].std).view(1, -1, 1, 1)
        levels = ((full_inputs - draft_inputs) * std * 255).abs().mean().item()
        full, draft = features[""], features["_draft"]
        between = np.linalg.norm(full[:, None] - full[None], axis=-1)[np.triu_indices(len(full), 1)]
        result["draft_change"] = {
            "decoded_size": f"{images[0].size[0]}x{images[0].size[1]} -> {drafts[0].size[0]}x{drafts[0].size[1]}",
            "input_mean_abs_diff_8bit_levels": round(levels, 3),
            "embedding_cosine_mean": round(float((full * draft).sum(axis=1).mean()), 6),
            "embedding_cosine_min": round(float((full * draft).sum(axis=1).min()), 6),
            "embedding_change_over_median_between_images": round(
                float(np.median(np.linalg.norm(full - draft, axis=1)) / np.median(between)), 4
            ),
        }
    return result


def run_isolated(*args: str) -> dict:
    # The child's stderr passes through, so that a failed measurement says why.
    out = subprocess.run([sys.executable, __file__, "--measure", *args], stdout=subprocess.PIPE, text=True)
    if out.returncode:
        sys.exit(f"A measurement ({' '.join(args[:2])}) failed; its error is above.")
    return json.loads(out.stdout.strip().splitlines()[-1])


def against_original(args: argparse.Namespace, common: list[str], options: list[str]) -> dict:
    """The original tool's build and ours in turn, each in its own process, with the load average before each."""
    rounds = []
    for _ in range(args.rounds):
        turn = {}
        runs = (
            ("original", "original", ["--original", args.original]),
            ("ours", "full", []),
            ("ours_draft", "full", ["--draft"]),
        )
        for name, mode, extra in runs:
            load = round(os.getloadavg()[0], 2)
            turn[name] = {"load_average": load, **run_isolated("tiny", mode, *common, *options, *extra)}
        for ours in ("ours", "ours_draft"):
            turn[f"speedup_{ours}"] = round(turn[ours]["images_per_s"] / turn["original"]["images_per_s"], 2)
        rounds.append(turn)
    return {"rounds": rounds, "target_speedup": 3.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--large-images", type=int, default=32, help="images in the 4000×3000 case")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--models", default="vit-b-32,tiny")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per measurement; the fastest is reported")
    parser.add_argument("--original", help="a checkout of the original tti-eval to measure against (tiny model)")
    parser.add_argument("--rounds", type=int, default=2, help="original/ours turns with --original")
    parser.add_argument("--draft", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure:
        model_key, mode, root, config_dir = args.measure
        if mode == "original":
            result = measure_original(Path(args.original), model_key, Path(root), Path(config_dir), args.repeat)
        else:
            result = measure(model_key, mode, Path(root), Path(config_dir), args.batch_size, args.repeat, args.draft)
        result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        print(json.dumps(result))
        return

    report: dict = {"batch_size": args.batch_size, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        config_dir = Path(tmp) / "configs"
        config_dir.mkdir()
        (config_dir / "bench-tiny.json").write_text(json.dumps(TINY_CONFIG))
        for case in args.cases.split(","):
            root = Path(tmp) / case
            size = CASES[case]
            count = args.large_images if size and size[0] > 1000 else args.images
            make_digits(root, count) if size is None else make_photos(root, count, size)
            common = [str(root), str(config_dir)]
            options = ["--batch-size", str(args.batch_size), "--repeat", str(args.repeat)]
            files = list(root.rglob("*.*"))
            entry: dict = {
                "images": count,
                "mean_file_kib": round(sum(f.stat().st_size for f in files) / len(files) / 1024),
            }
            for model_key in args.models.split(","):
                floor_mode = "bare-forward" if model_key == "vit-b-32" else "bare-loop"
                results = {
                    "stages": run_isolated(model_key, "stages", *common, *options),
                    "full_pipeline": run_isolated(model_key, "full", *common, *options),
                    floor_mode: run_isolated(model_key, floor_mode, *common, *options),
                }
                results["ratio"] = round(
                    results["full_pipeline"]["images_per_s"] / results[floor_mode]["images_per_s"], 3
                )
                results["target_ratio"] = 0.95 if model_key == "vit-b-32" else 0.8
                if size is not None and model_key == "tiny":
                    results["full_pipeline_draft"] = run_isolated(model_key, "full", *common, *options, "--draft")
                    results["bare-loop_draft"] = run_isolated(model_key, floor_mode, *common, *options, "--draft")
                    results["ratio_draft"] = round(
                        results["full_pipeline_draft"]["images_per_s"] / results["bare-loop_draft"]["images_per_s"], 3
                    )
                if args.original and model_key == "tiny":
                    results["against_original"] = against_original(args, common, options)
                entry[model_key] = results
            report[case] = entry
            print(json.dumps({case: entry}), file=sys.stderr)  # progress, in case a later case is interrupted
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
