"""2-D maps of cached image embeddings, computed once per (model, dataset, split, reduction) and kept on disk.

A map lives at `<cache>/reductions/<dataset>/<model>_<split>_<reduction>.npz` beside a content hash of the image
embeddings it was computed from and the seed it used; a rebuilt embeddings file or another seed makes it stale, and it
is recomputed. umap-learn and scikit-learn's manifold module are imported inside their reducer, because importing UMAP
costs tens of seconds the first time (numba compiles it) and most commands never need it.
"""

import hashlib
import logging
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tti_eval.common import EmbeddingDefinition, Embeddings, Split, TTIEvalError, get_settings
from tti_eval.common.atomic import atomic_write
from tti_eval.common.cache import load_embeddings
from tti_eval.common.errors import WriteError
from tti_eval.common.title_registry import TitleRegistry

logger = logging.getLogger("tti_eval")

Reducer = Callable[[np.ndarray, int], np.ndarray]
"""Maps image embeddings [N, D] to points [N, 2]; the int is the random seed, so a map can be reproduced."""

REDUCERS: TitleRegistry[Reducer] = TitleRegistry("reduction")
DEFAULT_REDUCTION = "umap"
DEFAULT_SEED = 42
MIN_POINTS = 5  # fewer cannot give UMAP or t-SNE a neighbourhood to work with


def register_reducer(title: str) -> Callable[[Reducer], Reducer]:
    """Decorator that makes a reducer available under `title` (to `reduce_embeddings` and `--reduction`)."""

    def register(reducer: Reducer) -> Reducer:
        return REDUCERS.register(title, reducer)

    return register


@register_reducer("umap")
def _umap(images: np.ndarray, seed: int) -> np.ndarray:
    import umap

    # A fixed random_state makes UMAP single-threaded anyway; saying n_jobs=1 silences its warning about it.
    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, len(images) - 1), random_state=seed, n_jobs=1)
    return reducer.fit_transform(images)


@register_reducer("pca")
def _pca(images: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(images)


@register_reducer("tsne")
def _tsne(images: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    # scikit-learn requires perplexity < N; a third of N keeps small splits meaningful.
    perplexity = min(30.0, (len(images) - 1) / 3)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(images)


def get_reducer(title: str) -> Reducer:
    """The reducer titled `title` (case-insensitive); an unknown title suggests the closest ones."""
    return REDUCERS.get_entry(title)


def reduction_path(definition: EmbeddingDefinition, split: Split, reduction: str) -> Path:
    return (
        get_settings().reductions_path / definition.dataset / f"{definition.model}_{Split(split).value}_{reduction}.npz"
    )


def fingerprint(images: np.ndarray) -> str:
    """A hash of exactly the numbers a map is computed from, so any rebuild that changes them invalidates it."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{images.dtype.str}{images.shape}".encode())
    digest.update(np.ascontiguousarray(images).data)
    return digest.hexdigest()


def _load_fresh(path: Path, expected_fingerprint: str, seed: int) -> np.ndarray | None:
    """The cached map if it matches these embeddings and seed; None when absent, stale or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if str(archive["fingerprint"]) == expected_fingerprint and int(archive["seed"]) == seed:
                return archive["points"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
        pass  # a damaged cache file is simply recomputed and replaced
    return None


def reduce_embeddings(
    definition: EmbeddingDefinition,
    split: Split = Split.VALIDATION,
    reduction: str = DEFAULT_REDUCTION,
    seed: int = DEFAULT_SEED,
    embeddings: Embeddings | None = None,
) -> np.ndarray:
    """The 2-D map [N, 2] (float32) of a cached split's image embeddings, from the reductions cache when fresh.

    `embeddings` are that split's, when the caller has them loaded already."""
    reduction = REDUCERS.canonical_title(reduction)  # one cache file whatever the letter case
    reducer = REDUCERS.get_entry(reduction)
    embeddings = embeddings if embeddings is not None else load_embeddings(definition, split)
    embeddings.check_usable(str(definition))  # NaN or zero vectors would make the reducers fail obscurely
    images = embeddings.images
    if len(images) < MIN_POINTS:
        raise TTIEvalError(
            f"{definition} has only {len(images)} {Split(split).value} images, and a 2-D map needs at least "
            f"{MIN_POINTS}; build embeddings of a larger split."
        )
    path = reduction_path(definition, split, reduction)
    expected = fingerprint(images)
    points = _load_fresh(path, expected, seed)
    if points is not None:
        return points

    logger.info("Computing the %s map of %d %s images of %s", reduction, len(images), Split(split).value, definition)
    points = np.asarray(reducer(images, seed), dtype=np.float32)
    try:
        atomic_write(
            path, lambda handle: np.savez(handle, points=points, fingerprint=np.array(expected), seed=np.array(seed))
        )
    except WriteError as e:  # the cache only saves time; a read-only or full cache must not cost the result
        logger.warning("The %s map of %s is not cached: %s", reduction, definition, str(e)[:1].lower() + str(e)[1:])
    return points
