"""Ranking and top-k metrics: pure functions of numpy arrays.

NDCG@k uses binary relevance and a log2 discount, with the ideal DCG over ``min(k, |test|)`` hits;
Recall@k is ``hits / min(k, |test|)``; catalogue coverage@k is the share of the rankable catalogue that
appears in at least one top-k list.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

__all__ = ["catalogue_coverage", "ndcg_at_k", "rank_top_k", "recall_at_k"]


def rank_top_k(
    scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None, tie_order: np.ndarray | None = None
) -> np.ndarray:
    """The ``k`` best columns of each row, best first.

    Ties go to the column with the lower ``tie_order`` value (default: the lower column). Evaluation
    passes a seeded random order, so that a model that cannot tell items apart (popularity on cold
    items) scores like random rather than like the catalogue's row order.

    Args:
        scores: ``(n_rows, n_cols)`` float scores (higher is better). Not modified.
        k: list length; capped at the number of columns.
        exclude: optional ``(n_rows, n_cols)`` sparse matrix; its stored entries are never returned
            (unless a row has fewer than ``k`` other columns, in which case they come last).
        tie_order: optional ``(n_cols,)`` distinct integers, the tie-break priority of each column.

    Returns:
        ``(n_rows, min(k, n_cols))`` int64 column indices.
    """
    scores = np.array(scores, dtype=np.float64, copy=True)
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    if exclude is not None:
        coo = exclude.tocoo()
        scores[coo.row, coo.col] = -np.inf
    scores[np.isnan(scores)] = -np.inf
    if k == 0:
        return np.zeros((n_rows, 0), dtype=np.int64)
    # Negate, then find the k smallest; break ties by column with a lexsort over the kept slice.
    neg = -scores
    part = np.argpartition(neg, k - 1, axis=1)[:, :k] if k < n_cols else np.tile(np.arange(n_cols), (n_rows, 1))
    # argpartition may split a tie at the boundary arbitrarily: widen to every column tied with the k-th.
    kth = np.take_along_axis(neg, part, axis=1).max(axis=1, keepdims=True)
    prio = np.arange(n_cols) if tie_order is None else np.asarray(tie_order)
    # The usual row has exactly k columns at or above the k-th score and no tie among them: sort that
    # slice by score, all rows at once. Rows with a tie (inside the slice or at its boundary) take the
    # widened path below, which orders equal scores by priority.
    kept = np.take_along_axis(neg, part, axis=1)
    order = np.argsort(kept, axis=1, kind="stable")
    out = np.take_along_axis(part, order, axis=1).astype(np.int64, copy=False)
    srt = np.take_along_axis(kept, order, axis=1)
    tied = (srt[:, 1:] == srt[:, :-1]).any(axis=1) if k > 1 else np.zeros(n_rows, dtype=bool)
    if k < n_cols:
        tied |= np.count_nonzero(neg <= kth, axis=1) > k
    for r in np.flatnonzero(tied):
        cols = np.flatnonzero(neg[r] <= kth[r])
        order = np.lexsort((prio[cols], neg[r, cols]))
        out[r] = cols[order[:k]]
    return out


def _hits(ranked: np.ndarray, test_items: Sequence[np.ndarray]) -> np.ndarray:
    """``(n_users, k)`` bool: whether each ranked item is among the user's test items.

    One ``isin`` over ``(row, item)`` keys for all users (a call per user cost more than the ranking).
    """
    ranked = np.asarray(ranked, dtype=np.int64)
    n = ranked.shape[0]
    if n == 0 or ranked.shape[1] == 0:
        return np.zeros(ranked.shape, dtype=bool)
    lengths = np.fromiter((len(t) for t in test_items), dtype=np.int64, count=n)
    truth = np.concatenate([np.asarray(t, dtype=np.int64).ravel() for t in test_items]) if lengths.sum() else \
        np.zeros(0, dtype=np.int64)
    width = int(max(ranked.max(), truth.max() if truth.size else 0)) + 2  # items + 1 >= 0 (pads of -1)
    row_of_truth = np.repeat(np.arange(n, dtype=np.int64), lengths)
    keys = row_of_truth * width + truth + 1
    ranked_keys = np.arange(n, dtype=np.int64)[:, None] * width + ranked + 1
    return np.isin(ranked_keys, keys)


def ndcg_at_k(ranked: np.ndarray, test_items: Sequence[np.ndarray], k: int = 10) -> np.ndarray:
    """Per-user NDCG@k.

    Args:
        ranked: ``(n_users, >= k)`` item indices, best first (only the first ``k`` are used).
        test_items: per user, the relevant item indices (non-empty).

    Returns:
        ``(n_users,)`` float64 in ``[0, 1]``.
    """
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    hits = _hits(ranked[:, :k], test_items)
    dcg = hits @ discount[: hits.shape[1]]
    n_ideal = np.minimum(k, np.fromiter((len(t) for t in test_items), dtype=np.int64, count=len(test_items)))
    ideal = np.concatenate([[0.0], np.cumsum(discount)])[n_ideal]
    return np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1.0), 0.0)


def recall_at_k(ranked: np.ndarray, test_items: Sequence[np.ndarray], k: int = 10) -> np.ndarray:
    """Per-user ``hits / min(k, |test|)``; shapes as in :func:`ndcg_at_k`."""
    out = np.empty(len(test_items), dtype=np.float64)
    for i, hit in enumerate(_hits(ranked[:, :k], test_items)):
        denom = min(k, len(test_items[i]))
        out[i] = float(hit.sum() / denom) if denom > 0 else 0.0
    return out


def catalogue_coverage(ranked: np.ndarray, n_catalogue: int, k: int = 10) -> float:
    """Distinct items in the first ``k`` columns of ``ranked`` over the size of the rankable catalogue."""
    if n_catalogue <= 0:
        return 0.0
    return float(np.unique(ranked[:, :k]).size / n_catalogue)
