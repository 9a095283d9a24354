"""Whether a pair's image embeddings have collapsed onto nearly one direction, as an untrained model's do.

Neighbour scores on such a pair are exact (see `_neighbours`) but decided by differences ~1e-4 that say more about
the model's numerical noise than about the images, so the pair's note says so.
"""

import numpy as np

from ._metrics import SEED

# Mean cosine similarity between random pairs of images above which the embeddings count as collapsed. A trained
# CLIP model's images stay well below (their mean pairwise cosine is typically 0.5-0.8); an untrained one's lie above.
COLLAPSED_COSINE = 0.999
# Random pairs sampled: the mean of 4,096 cosines in [-1, 1] is within ±0.03 of its expectation at 95 %, and far
# tighter for collapsed sets, whose cosines barely vary.
SAMPLED_PAIRS = 4096


def mean_pair_cosine(train_images: np.ndarray, val_images: np.ndarray, pairs: int = SAMPLED_PAIRS, seed: int = SEED):
    """The mean cosine similarity between `pairs` random pairs of distinct images drawn (seeded) from both sets."""
    n_train, n = len(train_images), len(train_images) + len(val_images)
    if n < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    first = rng.integers(0, n, pairs)
    second = (first + rng.integers(1, n, pairs)) % n  # never the image itself

    def unit_rows(indices: np.ndarray) -> np.ndarray:
        in_train = indices < n_train
        rows = np.empty((len(indices), train_images.shape[1]), dtype=np.float64)
        rows[in_train] = train_images[indices[in_train]]
        rows[~in_train] = val_images[indices[~in_train] - n_train]
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    return float(np.einsum("ij,ij->i", unit_rows(first), unit_rows(second)).mean())


def collapse_note(train_images: np.ndarray, val_images: np.ndarray, seed: int = SEED) -> str:
    """The sentence for the pair's note when its images are nearly collapsed, else ''."""
    cosine = mean_pair_cosine(train_images, val_images, seed=seed)
    if not cosine > COLLAPSED_COSINE:
        return ""
    return (
        f"Its image embeddings are nearly collapsed (mean cosine 1 − {1 - cosine:.1e} between random pairs of images): "
        "its scores say more about the model's degeneracy than about the data."
    )
