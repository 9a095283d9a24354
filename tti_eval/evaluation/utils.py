"""Numeric helpers shared by the evaluators.

`normalize` and `softmax` compute exactly what the original tool computed (same operations, same dtype), so that
scores built on them agree with its scores to the last bit wherever its results were well defined.
"""

from collections.abc import Iterator

import numpy as np

from tti_eval.common.errors import InvalidEmbeddingsError

# Rows per chunk when a pass over an [N, D] matrix would otherwise allocate a temporary as large as the matrix.
CHUNK_ROWS = 4096


def normalize(x: np.ndarray) -> np.ndarray:
    """A new array whose rows are the rows of `x` scaled to unit L2 norm (the input is left untouched)."""
    return x / np.linalg.norm(x, ord=2, axis=1, keepdims=True)


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax of a 2-D array, shifted by the row maximum so that large logits cannot overflow."""
    z = x - x.max(axis=1, keepdims=True)
    numerator = np.exp(z)
    return numerator / np.sum(numerator, axis=1, keepdims=True)


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
