"""Checks and chunking for large [N, D] embedding matrices, shared by the cache, the evaluators and the plots."""

from collections.abc import Iterator

import numpy as np

from .errors import InvalidEmbeddingsError

# Rows per chunk when a pass over an [N, D] matrix would otherwise allocate a temporary as large as the matrix.
CHUNK_ROWS = 4096


def row_chunks(n: int, rows: int = CHUNK_ROWS) -> Iterator[slice]:
    for start in range(0, n, rows):
        yield slice(start, min(start + rows, n))


def check_vectors(array: np.ndarray, name: str) -> None:
    """Reject vectors that have no direction (all zero) or are not finite, chunk by chunk.

    Done in chunks, because a whole-matrix `np.abs(array)` would double the memory of a large cache for a moment.
    """
    if array.ndim != 2 or array.shape[0] == 0:
        raise InvalidEmbeddingsError(f"There are no {name}; build embeddings for a split that has images.")
    for rows in row_chunks(len(array)):
        chunk = array[rows]
        if not np.isfinite(chunk).all():
            raise InvalidEmbeddingsError(f"The {name} contain NaN or infinite values; rebuild the embeddings.")
        if (np.abs(chunk).max(axis=1) == 0).any():
            raise InvalidEmbeddingsError(
                f"The {name} contain all-zero vectors, which have no direction; rebuild the embeddings."
            )
