"""Split rules shared by the dataset types, as plain index arithmetic so that no type needs `datasets` to apply them.

`carve_missing_splits` reproduces, row for row, what the original tool did with `datasets.Dataset.train_test_split`
when a source lacks validation and/or test: cached embeddings of both tools then describe the same images.
"""

from collections.abc import Collection
from math import ceil
from typing import TYPE_CHECKING

import numpy as np

from tti_eval.common.base import Split
from tti_eval.common.errors import TTIEvalError

if TYPE_CHECKING:
    from tti_eval.dataset.base import Dataset

CARVE_FRACTION = 0.15  # of the source's train split, per missing split
SPLIT_SEED = 42
CARVABLE_SPLITS = (Split.VALIDATION, Split.TEST)


def _train_test_indices(num_rows: int, test_size: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row indices exactly as `datasets.Dataset.train_test_split(test_size=..., seed=SPLIT_SEED)`."""
    num_test = ceil(test_size * num_rows)
    if num_rows - num_test <= 0:
        raise TTIEvalError(
            f"A train split of {num_rows} images is too small to carve validation/test splits from; "
            "add images or provide the missing splits."
        )
    permutation = np.random.default_rng(SPLIT_SEED).permutation(num_rows)
    return permutation[num_test:], permutation[:num_test]


def carve_missing_splits(num_train_rows: int, missing: Collection[Split]) -> dict[Split, np.ndarray]:
    """Indices into the source's train split for the new train split and for each missing validation/test split.

    15 % of train per missing split is held out (seed 42); when both are missing the held-out 30 % is halved again
    (seed 42): its "train" half becomes validation and its "test" half becomes test, as in the original tool.
    """
    missing = [split for split in CARVABLE_SPLITS if split in missing]
    if not missing:
        return {Split.TRAIN: np.arange(num_train_rows)}
    train, held_out = _train_test_indices(num_train_rows, CARVE_FRACTION * len(missing))
    if len(missing) == 1:
        return {Split.TRAIN: train, missing[0]: held_out}
    validation, test = _train_test_indices(len(held_out), 0.5)
    return {Split.TRAIN: train, Split.VALIDATION: held_out[validation], Split.TEST: held_out[test]}


def select_carved_split(dataset: "Dataset", num_train_rows: int, missing: Collection[Split]) -> np.ndarray:
    """Indices into the source's train split of `dataset.split` under `carve_missing_splits`, recording the rule in
    `dataset.split_rule` (part of the cache fingerprint) and the resulting sizes in `dataset.carving` (disclosed by
    `build` and kept in the split's metadata)."""
    carved = carve_missing_splits(num_train_rows, missing)
    dataset.split_rule = {
        "split": dataset.split.value,
        "from": "train",
        "missing": [split.value for split in CARVABLE_SPLITS if split in carved],
        "fraction": CARVE_FRACTION,
        "seed": SPLIT_SEED,
    }
    dataset.carving = {"train_images": num_train_rows} | {split.value: len(rows) for split, rows in carved.items()}
    return carved[dataset.split]


def describe_carving(carving: dict[str, int]) -> str:
    """One line saying how many train images went to which split, e.g. for `build`'s output."""
    moved = [f"{carving[split.value]:,} to {split.value}" for split in CARVABLE_SPLITS if split.value in carving]
    percent = round(CARVE_FRACTION * 100)
    return (
        f"carved from the source's {carving['train_images']:,} train images: {' and '.join(moved)} "
        f"({percent} % each, seed {SPLIT_SEED}), {carving[Split.TRAIN.value]:,} kept for train"
    )


def random_splits(num_items: int, train: float = 0.7, validation: float = 0.15) -> dict[Split, np.ndarray]:
    """A seeded 70/15/15 partition of `num_items` items for sources with no splits at all (Encord projects).

    Every split gets at least one item once there are three, so a small project still evaluates.
    """
    permutation = np.random.default_rng(SPLIT_SEED).permutation(num_items)
    num_train = max(1, int(num_items * train)) if num_items else 0
    num_validation = max(1, int(num_items * validation)) if num_items >= 2 else 0
    if num_items >= 3 and num_train + num_validation >= num_items:
        num_train = num_items - num_validation - 1
    return {
        Split.TRAIN: permutation[:num_train],
        Split.VALIDATION: permutation[num_train : num_train + num_validation],
        Split.TEST: permutation[num_train + num_validation :],
    }
