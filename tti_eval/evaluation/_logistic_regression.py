"""scikit-learn's `LogisticRegression` fit (lbfgs, L2 penalty, unpenalised intercept) on unit-length rows, in
bounded memory.

scikit-learn evaluates its objective on the whole train split at once, holding two [n_images, n_classes] arrays
(the logits and their gradient): 0.8 GiB at 100k images and 1,000 classes, on top of the images. Here the same
objective, the mean log loss plus ‖W‖² / (2·C·n), and its gradient are summed over blocks of rows, each block
L2-normalised as it is read (so there is no normalised copy of the images either), and handed to scipy's L-BFGS-B with
scikit-learn's options and starting point (zeros), so the fit follows scikit-learn's path in a block's working
memory. Products run in the images' dtype and sums accumulate in float64, which keeps the fit as close to the float64
one of the original tool's scikit-learn as its float32 one is not. The two losses are scikit-learn's: the binomial
one (a single weight row) for two classes, the multinomial one for more.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

from tti_eval.common.vectors import CHUNK_ROWS, row_chunks

from .utils import normalize

# scikit-learn's LogisticRegression defaults.
MAX_ITER = 100
TOLERANCE = 1e-4
# Rows per block: at most CHUNK_ROWS (float32 sums over longer runs of rows lose digits the original's float64 kept),
# fewer when there are so many classes that a block of logits would pass BLOCK_ELEMENTS (16 MiB of float32).
BLOCK_ELEMENTS = 1 << 22

# (logits [b, rows], labels [b]) -> (sum of the pointwise losses, d loss / d logits in the logits' dtype); the
# logits may be overwritten.
PointwiseLoss = Callable[[np.ndarray, np.ndarray], tuple[float, np.ndarray]]


def _binomial_loss(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    z = logits[:, 0]
    positive = labels == 1
    loss = np.logaddexp(0.0, z, dtype=np.float64) - np.where(positive, z, 0.0)
    return float(loss.sum()), (expit(z) - positive)[:, None].astype(logits.dtype)


def _multinomial_loss(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    # In place: the logits become the gradient, p - onehot(label).
    logits -= logits.max(axis=1, keepdims=True)
    rows = np.arange(len(labels))
    true_class = logits[rows, labels].astype(np.float64)
    np.exp(logits, out=logits)
    totals = logits.sum(axis=1, dtype=np.float64)
    logits /= totals[:, None].astype(logits.dtype)
    logits[rows, labels] -= 1
    return float((np.log(totals) - true_class).sum()), logits


@dataclass(frozen=True)
class LogisticModel:
    """A fitted model of unit-length rows: one weight row per class, or one (the second class's) for two classes."""

    weights: np.ndarray  # [rows, dim] float64
    intercept: np.ndarray  # [rows] float64
    iterations: int
    stop_reason: str  # why the solver stopped short of converging; "" when it converged

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """[n, n_classes] class probabilities of the normalised rows of `images`, as scikit-learn gives them."""
        x = normalize(images)
        logits = x @ self.weights.T.astype(x.dtype)
        logits += self.intercept.astype(x.dtype)
        if logits.shape[1] == 1:
            positive = expit(logits[:, 0])
            return np.stack([1 - positive, positive], axis=1)
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        return logits


def fit_logistic_regression(
    images: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    C: float = 1.0,
    rows: np.ndarray | None = None,
    max_iter: int = MAX_ITER,
    tol: float = TOLERANCE,
    initial: LogisticModel | None = None,
) -> LogisticModel:
    """Fit on the normalised rows `images[rows]` (all rows by default), `labels` in 0..n_classes-1 one per row.

    `initial` warm-starts the solver from an earlier model of the same shape.
    """
    if rows is not None and len(rows) != len(labels):
        raise ValueError("Give one label per chosen row")
    n, dim = (len(labels), images.shape[1])
    loss: PointwiseLoss = _binomial_loss if n_classes == 2 else _multinomial_loss
    n_rows = 1 if n_classes == 2 else n_classes
    block = max(256, min(CHUNK_ROWS, BLOCK_ELEMENTS // n_rows))
    penalty = 1.0 / (C * n)

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        # scikit-learn's layout: the classes of one feature are contiguous, the intercepts last.
        coef = flat.reshape((n_rows, dim + 1), order="F")
        weights = coef[:, :dim].astype(images.dtype)
        intercept = coef[:, dim].astype(images.dtype)
        total = 0.0
        gradient = np.zeros((n_rows, dim + 1))
        for chunk in row_chunks(n, block):
            x = normalize(images[chunk] if rows is None else images[rows[chunk]])
            logits = x @ weights.T
            logits += intercept
            chunk_loss, pointwise = loss(logits, labels[chunk])
            total += chunk_loss
            gradient[:, :dim] += pointwise.T @ x
            gradient[:, dim] += pointwise.sum(axis=0, dtype=np.float64)
        gradient /= n
        gradient[:, :dim] += penalty * coef[:, :dim]
        value = total / n + 0.5 * penalty * float(np.square(coef[:, :dim]).sum())
        return value, gradient.ravel(order="F")

    start = np.zeros((n_rows, dim + 1))
    if initial is not None:
        start[:, :dim], start[:, dim] = initial.weights, initial.intercept
    result = minimize(
        objective,
        start.ravel(order="F"),
        method="L-BFGS-B",
        jac=True,
        options={"maxiter": max_iter, "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps},
    )
    coef = result.x.reshape((n_rows, dim + 1), order="F")
    return LogisticModel(
        weights=coef[:, :dim].copy(),
        intercept=coef[:, dim].copy(),
        iterations=min(int(result.nit), max_iter),
        stop_reason={0: "", 1: f"it reached its limit of {max_iter} iterations"}.get(result.status, result.message),
    )
