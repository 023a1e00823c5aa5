"""Ridge maps from item content to the CF space: factors and popularity for items without events."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RidgeMap", "fit_ridge"]


@dataclass(frozen=True)
class RidgeMap:
    """A linear map ``y = x @ coef + intercept`` fitted by ridge regression.

    Attributes:
        coef: ``(d_in, d_out)`` float32.
        intercept: ``(d_out,)`` float32.
    """

    coef: np.ndarray
    intercept: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``(n, d_in)`` -> ``(n, d_out)`` float32."""
        return (np.asarray(x, dtype=np.float32) @ self.coef + self.intercept).astype(np.float32)


def fit_ridge(x: np.ndarray, y: np.ndarray, l2: float, sample_weight: np.ndarray | None = None) -> RidgeMap:
    """Ridge regression of ``y`` on ``x`` with an unpenalised intercept.

    Solved in the smaller of the primal (``d_in x d_in``) and dual (``n x n``) forms.

    Args:
        x: ``(n, d_in)``; y: ``(n, d_out)`` or ``(n,)``; l2: penalty > 0.
        sample_weight: optional ``(n,)`` non-negative weights.
    """
    x = np.asarray(x, dtype=np.float64)
    y2 = np.asarray(y, dtype=np.float64)
    squeeze = y2.ndim == 1
    if squeeze:
        y2 = y2[:, None]
    n, d = x.shape
    if n == 0:
        return RidgeMap(np.zeros((d, y2.shape[1]), np.float32), np.zeros(y2.shape[1], np.float32))
    sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    x_mean = (sw[:, None] * x).sum(0) / sw.sum()
    y_mean = (sw[:, None] * y2).sum(0) / sw.sum()
    xc, yc = x - x_mean, y2 - y_mean
    root = np.sqrt(sw)[:, None]
    xw, yw = xc * root, yc * root
    if d <= n:
        coef = np.linalg.solve(xw.T @ xw + l2 * np.eye(d), xw.T @ yw)
    else:
        coef = xw.T @ np.linalg.solve(xw @ xw.T + l2 * np.eye(n), yw)
    intercept = y_mean - x_mean @ coef
    if squeeze:
        coef, intercept = coef[:, :1], intercept[:1]
    return RidgeMap(coef.astype(np.float32), intercept.astype(np.float32))
