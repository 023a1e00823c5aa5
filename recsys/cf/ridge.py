"""Ridge maps from item content to the CF space: factors and popularity for items without events."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["RidgeMap", "RidgeSolver", "fit_ridge"]


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
    return RidgeSolver(x, l2, sample_weight).fit(y)


class RidgeSolver:
    """:func:`fit_ridge` for several targets on the same inputs: the centred inputs and their Gram matrix
    (the costly part, ``n * d_in**2``) are computed once, each :meth:`fit` solves for one target."""

    def __init__(self, x: np.ndarray, l2: float, sample_weight: np.ndarray | None = None) -> None:
        x = np.asarray(x, dtype=np.float64)
        n, d = x.shape
        self.n, self.d, self.l2 = n, d, l2
        if n == 0:
            return
        self.sw = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        self.x_mean = (self.sw[:, None] * x).sum(0) / self.sw.sum()
        self.root = np.sqrt(self.sw)[:, None]
        self.xw = (x - self.x_mean) * self.root
        self.primal = d <= n
        self.gram = (self.xw.T @ self.xw + l2 * np.eye(d)) if self.primal else (self.xw @ self.xw.T + l2 * np.eye(n))

    def fit(self, y: np.ndarray) -> RidgeMap:
        """The map for targets ``y`` (``(n, d_out)`` or ``(n,)``, rows matching the inputs)."""
        y2 = np.asarray(y, dtype=np.float64)
        squeeze = y2.ndim == 1
        if squeeze:
            y2 = y2[:, None]
        if self.n == 0:
            return RidgeMap(np.zeros((self.d, y2.shape[1]), np.float32), np.zeros(y2.shape[1], np.float32))
        y_mean = (self.sw[:, None] * y2).sum(0) / self.sw.sum()
        yw = (y2 - y_mean) * self.root
        if self.primal:
            coef = np.linalg.solve(self.gram, self.xw.T @ yw)
        else:
            coef = self.xw.T @ np.linalg.solve(self.gram, yw)
        intercept = y_mean - self.x_mean @ coef
        if squeeze:
            coef, intercept = coef[:, :1], intercept[:1]
        return RidgeMap(coef.astype(np.float32), intercept.astype(np.float32))
