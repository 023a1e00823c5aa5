"""Query filters (allowed rows, excluded rows) and top-k helpers shared by the retrievers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NEG_INF = np.float32(-np.inf)
NO_ROWS = np.empty(0, dtype=np.int64)
"""An empty ``(0,)`` int64 row list (shared; never written to)."""
Exclude = Sequence[int] | np.ndarray | Sequence[Sequence[int] | np.ndarray] | None


@dataclass(frozen=True)
class RowFilter:
    """Rows each query may return, normalised from the ``allow`` / ``exclude`` arguments.

    ``allow`` is ``None``, ``(size,)`` bool (shared) or ``(n, size)`` bool; ``exclude`` holds one
    int64 array per query (shared arrays are repeated, not copied).
    """

    n_queries: int
    allow: np.ndarray | None
    exclude: tuple[np.ndarray, ...] | None

    @classmethod
    def build(cls, n_queries: int, size: int, allow: np.ndarray | None, exclude: Exclude, single: bool) -> RowFilter:
        mask = None
        if allow is not None:
            mask = np.asarray(allow)
            if mask.dtype != np.bool_:
                raise ValueError(f"allow must be a boolean mask, got dtype {mask.dtype}")
            if mask.shape not in ((size,), (n_queries, size)):
                raise ValueError(
                    f"allow must have shape ({size},) or ({n_queries}, {size}), got {mask.shape}"
                )
        return cls(n_queries, mask, _normalise_exclude(exclude, n_queries, size, single))

    @property
    def empty(self) -> bool:
        return self.allow is None and self.exclude is None

    def allow_row(self, i: int) -> np.ndarray | None:
        if self.allow is None:
            return None
        return self.allow if self.allow.ndim == 1 else self.allow[i]

    def exclude_row(self, i: int) -> np.ndarray:
        return NO_ROWS if self.exclude is None else self.exclude[i]


def _normalise_exclude(exclude: Exclude, n: int, size: int, single: bool) -> tuple[np.ndarray, ...] | None:
    if exclude is None:
        return None
    if isinstance(exclude, np.ndarray) and exclude.ndim == 2 and not single and len(exclude) == n:
        exclude = list(exclude)
    seq = list(exclude) if not isinstance(exclude, np.ndarray) else None
    per_query = (
        not single
        and seq is not None
        and len(seq) == n
        and all(isinstance(e, (Sequence, np.ndarray)) and not isinstance(e, str) for e in seq)
    )
    rows = [np.asarray(e, dtype=np.int64).ravel() for e in seq] if per_query and seq is not None else None
    if rows is None:
        allowed = f"a sequence of row ids, or (batched) {n} sequences of row ids, one per query"
        try:
            arr = np.asarray(exclude)
        except ValueError:  # ragged, and not one list per query
            raise ValueError(f"exclude must be {allowed}") from None
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"exclude must be {allowed}")
        shared = arr.astype(np.int64).ravel()
        rows = [shared] * n
    for r in rows:
        if r.size and (r.min() < 0 or r.max() >= size):
            raise ValueError(f"exclude holds row ids outside 0..{size - 1}")
    if not any(r.size for r in rows):
        return None
    return tuple(rows)


# --------------------------------------------------------------------------- top-k helpers


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` of each row of ``scores``; ``-inf`` marks rows that may not be returned.

    Args:
        scores: ``(n, m)`` float32.
        k: 1 <= k <= m.

    Returns:
        ``(ids (n, k) int64, scores (n, k) float32)``, descending; ties by lower id; entries whose
        score is ``-inf`` get id ``-1``.
    """
    n, m = scores.shape
    if k < m:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(m), (n, m))
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    ids = np.take_along_axis(part, order, axis=1).astype(np.int64)
    vals = np.take_along_axis(vals, order, axis=1).astype(np.float32, copy=False)
    ids[~np.isfinite(vals)] = -1
    return ids, vals


def merge_top_k(
    ids_a: np.ndarray, scores_a: np.ndarray, ids_b: np.ndarray, scores_b: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Merge two ``(n, *)`` candidate lists into the ``(n, k)`` best (invalid entries: id -1)."""
    ids = np.concatenate([ids_a, ids_b], axis=1)
    scores = np.concatenate([scores_a, scores_b], axis=1).astype(np.float32, copy=True)
    scores[ids < 0] = NEG_INF
    pos, top = top_k(scores, min(k, ids.shape[1]))
    out = np.take_along_axis(ids, np.maximum(pos, 0), axis=1)
    out[pos < 0] = -1
    if out.shape[1] < k:
        pad = k - out.shape[1]
        out = np.pad(out, ((0, 0), (0, pad)), constant_values=-1)
        top = np.pad(top, ((0, 0), (0, pad)), constant_values=NEG_INF)
    return out, top
