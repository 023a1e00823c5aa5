"""Diversity: maximal marginal relevance and per-category caps. Pure functions of arrays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mmr(scores: np.ndarray, vectors: np.ndarray, k: int, trade_off: float) -> np.ndarray:
    """Maximal marginal relevance selection.

    Args:
        scores: ``(n,)`` relevance of each candidate (any scale; min-max scaled to [0, 1] here).
        vectors: ``(n, dim)`` float32, L2-normalised item vectors (similarity = dot product).
        k: how many to select.
        trade_off: 0 = pure relevance (the order of ``scores``), 1 = most diverse.

    Returns:
        ``(min(k, n),)`` indices into the candidates, in selection order.
    """
    n = len(scores)
    k = min(k, n)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    if trade_off <= 0.0:
        return order[:k]
    span = float(scores.max() - scores.min())
    rel = (scores - scores.min()) / span if span > 0 else np.zeros_like(scores, dtype=np.float64)
    chosen = [int(order[0])]
    max_sim = vectors @ vectors[chosen[0]]
    available = np.ones(n, dtype=bool)
    available[chosen[0]] = False
    for _ in range(1, k):
        value = (1.0 - trade_off) * rel - trade_off * max_sim
        value[~available] = -np.inf
        nxt = int(np.argmax(value))
        chosen.append(nxt)
        available[nxt] = False
        np.maximum(max_sim, vectors @ vectors[nxt], out=max_sim)
    return np.asarray(chosen, dtype=np.int64)


def cap_per_category(order: np.ndarray, categories: Sequence[str | None], cap: int, k: int) -> np.ndarray:
    """Walk ``order`` and keep at most ``cap`` items of each category, up to ``k`` items.

    Items without a category are not capped.
    """
    counts: dict[str, int] = {}
    kept: list[int] = []
    for i in order:
        cat = categories[int(i)]
        if cat is not None:
            if counts.get(cat, 0) >= cap:
                continue
            counts[cat] = counts.get(cat, 0) + 1
        kept.append(int(i))
        if len(kept) >= k:
            break
    return np.asarray(kept, dtype=np.int64)


def reshape(rows: np.ndarray, scores: np.ndarray, k: int, *, vectors: np.ndarray, categories: Sequence[str | None],
            diversity: float = 0.0, max_per_category: int | None = None) -> np.ndarray:
    """Positions into a ranked pool after MMR (``diversity`` > 0) and per-category caps, at most ``k``.

    Args:
        rows, scores: one user's ranked pool (catalogue rows, best first; no ``-1`` pads).
        vectors: ``(n_items, d)`` L2-normalised item vectors (MMR's similarity).
    """
    pick = np.arange(len(rows))
    if len(rows) and diversity > 0:
        pick = np.asarray(mmr(scores.astype(np.float64), vectors[rows], len(rows), diversity), dtype=np.int64)
    if len(rows) and max_per_category:
        pick = pick[cap_per_category(np.arange(len(pick)), [categories[int(rows[i])] for i in pick], max_per_category, k)]
    return pick[:k]
