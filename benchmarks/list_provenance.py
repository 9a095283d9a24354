"""`tti-eval list` on a large cache: every split's fingerprint is re-checked (definitions, file stats, versions).

A cache of MODELS × DATASETS pairs (train and validation each), every dataset an image folder of IMAGES files and
every model a local directory, is written with real fingerprints; `tti-eval list` then runs in fresh processes, as a
user would run it, and the best wall time is reported beside `tti-eval --help` (the import floor) and beside `list`
on the same cache with provenance checks made trivial (all definitions removed: "provenance unknown").

    python benchmarks/list_provenance.py [--models 20] [--datasets 15] [--images 500] [--repeat 3]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _write_sources(root: Path, models: int, datasets: int, images: int) -> tuple[list[str], list[str]]:
    model_titles, dataset_titles = [f"m{i}" for i in range(models)], [f"d{i}" for i in range(datasets)]
    for title in model_titles:
        folder = root / "model-dirs" / title
        folder.mkdir(parents=True)
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            (folder / name).write_bytes(b"x" * 64)
        definition = {"model_type": "HFModel", "title": title, "title_in_source": str(folder)}
        (root / "sources" / "models").mkdir(parents=True, exist_ok=True)
        (root / "sources" / "models" / f"{title}.json").write_text(json.dumps(definition))
    for title in dataset_titles:
        for split in ("train", "validation"):
            for c in range(10):
                folder = root / "trees" / title / split / f"class{c}"
                folder.mkdir(parents=True)
                for i in range(images // 20):
                    (folder / f"{i}.png").write_bytes(b"\x89PNG" + bytes(60))  # stat'ed, never decoded
        definition = {
            "dataset_type": "ImageFolderDataset",
            "title": title,
            "title_in_source": str(root / "trees" / title),
        }
        (root / "sources" / "datasets").mkdir(parents=True, exist_ok=True)
        (root / "sources" / "datasets" / f"{title}.json").write_text(json.dumps(definition))
    return model_titles, dataset_titles


def _fill_cache(model_titles: list[str], dataset_titles: list[str]) -> None:
    """Real fingerprints (the engine's own `build_metadata` parts), random embeddings: no model is run."""
    import numpy as np

    from tti_eval.common import EmbeddingDefinition, Embeddings, Split, save_embeddings
    from tti_eval.dataset import DatasetProvider
    from tti_eval.provenance import build_fingerprint

    rng = np.random.default_rng(0)
    for dataset_title in dataset_titles:
        for split in (Split.TRAIN, Split.VALIDATION):
            dataset = DatasetProvider.get_dataset(dataset_title, split)
            labels = np.zeros(len(dataset), dtype=np.int64)  # `list` never reads them
            for model_title in model_titles:
                pair = EmbeddingDefinition(model=model_title, dataset=dataset_title)
                embeddings = Embeddings(images=rng.standard_normal((len(labels), 32)), labels=labels)
                save_embeddings(pair, embeddings, split, {"fingerprint": build_fingerprint(pair, dataset)})


def _best_time(args: list[str], env: dict[str, str], repeat: int) -> tuple[float, str]:
    best, output = float("inf"), ""
    for _ in range(repeat):
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "tti_eval.cli.main", *args], env=env, capture_output=True, text=True
        )
        best = min(best, time.perf_counter() - start)
        output = result.stdout
    return best, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=20)
    parser.add_argument("--datasets", type=int, default=15)
    parser.add_argument("--images", type=int, default=500, help="per dataset (train and validation together)")
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tti-eval-list-bench-") as tmp:
        root = Path(tmp)
        env = os.environ | {"TTI_EVAL_SOURCES_PATH": str(root / "sources"), "TTI_EVAL_CACHE_PATH": str(root / "cache")}
        env["COLUMNS"] = "250"  # rich would wrap the table's cells
        os.environ.update(env)
        model_titles, dataset_titles = _write_sources(root, options.models, options.datasets, options.images)
        _fill_cache(model_titles, dataset_titles)
        help_s, _ = _best_time(["--help"], env, options.repeat)
        list_s, listed = _best_time(["list"], env, options.repeat)
        fresh = listed.count("up to date")
        for file in (root / "sources").rglob("*.json"):
            file.unlink()
        unknown_s, _ = _best_time(["list"], env, options.repeat)
    pairs = options.models * options.datasets
    print(
        json.dumps(
            {
                "pairs": pairs,
                "splits": 2 * pairs,
                "images_per_dataset": options.images,
                "rows_up_to_date": fresh,
                "help_s": round(help_s, 3),
                "list_s": round(list_s, 3),
                "list_without_checks_s": round(unknown_s, 3),
                "check_ms_per_split": round(1000 * (list_s - unknown_s) / (2 * pairs), 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
