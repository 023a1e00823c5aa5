"""Top-k selection with the evaluation's tie order, and masks of items users have seen.

Pure functions of arrays. :func:`tie_order` is the tie-break priority of the offline protocols; the feed
ranker orders ties the same way, so the service returns the evaluation's ranking.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["seen_mask", "tie_order", "top_k_rows", "top_k_rows_2d"]


def tie_order(n_items: int, seed: int = 0) -> np.ndarray:
    """The evaluation's tie-break priority: a seeded random permutation of the items."""
    return np.random.default_rng(seed).permutation(n_items)


def top_k_rows(scores: np.ndarray, k: int, priority: np.ndarray) -> np.ndarray:
    """The ``k`` best columns of each row, best first; ties go to the lower ``priority``.

    The same order as :func:`recsys.ranking.metrics.rank_top_k` (columns at ``-inf`` are allowed
    only when a row has fewer than ``k`` others; callers drop them). ``scores``: ``(n, m)`` float32.
    """
    n, m = scores.shape
    k = min(k, m)
    if k == 0 or n == 0:
        return np.zeros((n, k), dtype=np.int64)
    if m >= 64 * k and m >= 4096:
        return _top_k_by_blocks(scores, k, priority)
    part = np.argpartition(scores, m - k, axis=1)[:, m - k :] if k < m else np.tile(np.arange(m), (n, 1))
    part_s = np.take_along_axis(scores, part, axis=1)
    kth = part_s.min(axis=1, keepdims=True)
    tied = (scores >= kth).sum(axis=1) > k  # a tie at the boundary: argpartition may have split it
    order = np.lexsort((priority[part], -part_s), axis=1)
    out = np.take_along_axis(part, order, axis=1)
    for r in np.flatnonzero(tied):
        cols = np.flatnonzero(scores[r] >= kth[r])
        out[r] = cols[np.lexsort((priority[cols], -scores[r, cols]))[:k]]
    return out


def _top_k_by_blocks(scores: np.ndarray, k: int, priority: np.ndarray, block: int = 64) -> np.ndarray:
    """:func:`top_k_rows` for wide rows: the ``k``-th largest of the block maxima bounds the answer from
    below (``k`` distinct elements reach it), so only the blocks whose maximum reaches it are searched."""
    n, m = scores.shape
    full = m // block
    blocks = scores[:, : full * block].reshape(n, full, block)
    maxima = blocks.max(axis=2)
    if m > full * block:
        maxima = np.concatenate([maxima, scores[:, full * block :].max(axis=1, keepdims=True)], axis=1)
    nb = maxima.shape[1]
    bound = np.partition(maxima, nb - k, axis=1)[:, nb - k] if nb >= k else maxima.min(axis=1)
    r_blk, b_idx = np.nonzero(maxima[:, :full] >= bound[:, None])  # the few blocks that can hold the answer
    vals = blocks[r_blk, b_idx].ravel()
    rows = np.repeat(r_blk, block)
    cols = (b_idx[:, None] * block + np.arange(block)[None, :]).ravel()
    if m > full * block:  # the short last block
        r_t, c_t = np.nonzero(scores[:, full * block :] >= bound[:, None])
        rows = np.concatenate([rows, r_t])
        cols = np.concatenate([cols, c_t + full * block])
        vals = np.concatenate([vals, scores[r_t, c_t + full * block]])
    keep = vals >= bound[rows]
    r, c, vals = rows[keep], cols[keep], vals[keep]
    order = np.lexsort((priority[c], -vals, r))
    r, c = r[order], c[order]
    starts = np.searchsorted(r, np.arange(n))
    take = starts[:, None] + np.arange(k)[None, :]
    return c[np.minimum(take, len(c) - 1)]


def top_k_rows_2d(scores: np.ndarray, k: int, priority: np.ndarray) -> np.ndarray:
    """:func:`top_k_rows` with a per-row priority ``(n, m)`` (candidate columns differ per user)."""
    n, m = scores.shape
    k = min(k, m)
    out = np.empty((n, k), dtype=np.int64)
    for r in range(n):
        out[r] = np.lexsort((priority[r], -scores[r]))[:k]
    return out


def seen_mask(seen: sp.csr_matrix, cols: np.ndarray) -> np.ndarray:
    out = np.zeros(cols.shape, dtype=bool)
    for u in range(cols.shape[0]):
        items = seen.indices[seen.indptr[u] : seen.indptr[u + 1]]
        if items.size:
            out[u] = np.isin(cols[u], items)
    return out
