"""EASE (Steck 2019): a closed-form item-item model for implicit feedback.

``B = I - P / diag(P)`` with ``P = (X^T X + lambda I)^-1`` and a zero diagonal; a user with history row
``x`` (``(n_items,)``) scores ``x @ B``. The Gram matrix is dense, ``n_items^2`` float32, so the fit works
in place on that one buffer (Cholesky factor and inverse by LAPACK ``spotrf`` / ``spotri``, then the
upper triangle mirrored block by block): peak memory is about ``4 * n_items^2`` bytes plus a block
(1.35 GB at 18,357 items). Callers cap the item count (``cf.tuning.ease_max_items``) and fall back to
another component above it.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from recsys.errors import RecsysError

log = logging.getLogger(__name__)

__all__ = ["ease_bytes", "fit_ease"]

_BLOCK = 1024


def ease_bytes(n_items: int) -> int:
    """Bytes of the dense ``(n_items, n_items)`` float32 matrix the fit holds."""
    return 4 * n_items * n_items


def gram(weights: sp.csr_matrix) -> np.ndarray:
    """``X^T X`` as a dense C-contiguous ``(n_items, n_items)`` float32 array (the only large buffer)."""
    x = sp.csr_matrix(weights, dtype=np.float32)
    g = (x.T @ x).tocsr()
    out = np.zeros(g.shape, dtype=np.float32)
    for start in range(0, g.shape[0], _BLOCK):  # densify by row blocks: no second n^2 temporary
        out[start : start + _BLOCK] = g[start : start + _BLOCK].toarray()
    return out


_LAST: list[tuple[tuple[str, float], np.ndarray]] = []
"""The last fit (key: fingerprint of the weights, lambda), so that two callers fitting the same matrix in
one process (the hybrid and the EASE yardstick of ``recsys evaluate``) pay for it once."""


def _fingerprint(weights: sp.csr_matrix) -> str:
    import hashlib

    x = sp.csr_matrix(weights)
    h = hashlib.sha1(str(x.shape).encode())
    for part in (x.indptr, x.indices, x.data):
        h.update(np.ascontiguousarray(part).tobytes())
    return h.hexdigest()


def fit_ease(weights: sp.csr_matrix, lam: float, g: np.ndarray | None = None) -> np.ndarray:
    """The EASE item-item matrix of a ``(n_users, n_items)`` weight matrix.

    Args:
        weights: user x item weights (binary or confidences).
        lam: L2 penalty ``lambda`` > 0 (larger: smoother, more popularity-like).
        g: a precomputed :func:`gram` of ``weights`` to work in (it is overwritten); default computed.

    Returns:
        ``(n_items, n_items)`` float32 ``B`` with a zero diagonal (score = history row ``@ B``), read-only
        (the last fit is kept and returned again for the same weights and ``lam``).

    Raises:
        RecsysError: the penalised Gram matrix is not positive definite (``lam`` <= 0).
    """
    if lam <= 0:
        raise RecsysError(f"EASE needs lambda > 0, got {lam}")
    key = (_fingerprint(weights), float(lam)) if g is None else None
    if key is not None and _LAST and _LAST[0][0] == key:
        log.info("EASE (lambda %g): the same fit as the last one, reused", lam)
        return _LAST[0][1]
    _LAST.clear()  # release the previous matrix before allocating the next
    t0 = time.perf_counter()
    p = gram(weights) if g is None else g
    n = p.shape[0]
    p[np.diag_indices(n)] += np.float32(lam)
    # p is symmetric and C-ordered: its transpose is the same matrix in Fortran order, which LAPACK
    # overwrites in place. "lower" of the Fortran view is the upper triangle of p.
    f = p.T
    c, info = lapack.spotrf(f, lower=1, overwrite_a=1, clean=0)
    if info != 0:
        raise RecsysError(f"EASE: Cholesky failed (info {info}); lambda {lam} too small?")
    inv, info = lapack.spotri(c, lower=1, overwrite_c=1)
    if info != 0:
        raise RecsysError(f"EASE: inverse failed (info {info})")
    p = np.ascontiguousarray(inv.T) if not np.shares_memory(inv, p) else p
    _mirror_upper(p)
    d = np.diag(p).copy()
    p /= -d[None, :]
    p[np.diag_indices(n)] = 0.0
    log.info("EASE on %d items (lambda %g) in %.1fs", n, lam, time.perf_counter() - t0)
    p.flags.writeable = False  # shared through the cache
    if key is not None:
        _LAST.append((key, p))
    return p


def _mirror_upper(p: np.ndarray) -> None:
    """Copy the upper triangle of a square array onto its lower triangle, in place, block by block."""
    n = p.shape[0]
    for start in range(0, n, _BLOCK):
        stop = min(start + _BLOCK, n)
        diag = p[start:stop, start:stop]
        p[start:stop, start:stop] = np.triu(diag) + np.triu(diag, 1).T
        if stop < n:
            p[stop:, start:stop] = p[start:stop, stop:].T
