"""Numeric helpers shared by the evaluators.

`normalize` and `softmax` compute exactly what the original tool computed (same operations, same dtype), so that
scores built on them agree with its scores to the last bit wherever its results were well defined.
"""

import numpy as np


def normalize(x: np.ndarray) -> np.ndarray:
    """A new array whose rows are the rows of `x` scaled to unit L2 norm (the input is left untouched)."""
    return x / np.linalg.norm(x, ord=2, axis=1, keepdims=True)


def softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise softmax of a 2-D array, shifted by the row maximum so that large logits cannot overflow."""
    z = x - x.max(axis=1, keepdims=True)
    numerator = np.exp(z)
    return numerator / np.sum(numerator, axis=1, keepdims=True)
