"""Fusing lexical and dense scores over the same rows (pure numpy).

- :func:`linear_fusion`: ``w_lex * bm25 / max(bm25) + w_dense * (cos - mean) / (max - mean)``; both parts
  are 1 at the query's best item, so the weights (chosen on validation queries) mean the same for every
  query.
- :func:`rrf_fusion`: reciprocal-rank fusion (Cormack et al. 2009) of the best ``candidates`` of each list,
  ``sum 1 / (k + rank)``.
"""

from __future__ import annotations

import numpy as np

from recsys.search.engine import top_k


def normalise_lexical(scores: np.ndarray) -> np.ndarray:
    """``(n,)`` BM25 scores divided by their maximum (all zero stays zero)."""
    top = float(scores.max()) if len(scores) else 0.0
    return scores / np.float32(top) if top > 0 else np.zeros_like(scores)


def normalise_dense(cosines: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """``(n,)`` cosines rescaled so that the mean over ``allowed`` rows is 0 and the best allowed row is 1."""
    if not allowed.any():
        return np.zeros_like(cosines)
    sub = cosines[allowed]
    mean, top = float(sub.mean()), float(sub.max())
    return (cosines - np.float32(mean)) / np.float32(max(top - mean, 1e-6))


def linear_fusion(lexical: np.ndarray, dense: np.ndarray, allowed: np.ndarray, w_lex: float,
                  w_dense: float) -> np.ndarray:
    """``(n,)`` float32 fused scores of ``(n,)`` BM25 scores and ``(n,)`` cosines."""
    return (np.float32(w_lex) * normalise_lexical(lexical)
            + np.float32(w_dense) * normalise_dense(dense, allowed)).astype(np.float32)


def rrf_fusion(lists: list[tuple[np.ndarray, bool]], allowed: np.ndarray, k: int = 60, candidates: int = 1000) -> np.ndarray:
    """``(n,)`` float32: sum over ``lists`` (``(n,)`` scores, higher better, and whether rows scoring ``<= 0``
    are left out, as in a lexical list) of ``1 / (k + rank)`` for the best ``candidates`` allowed rows of each."""
    return rrf_ranked([ranked_rows(scores, allowed & (scores > 0) if positive_only else allowed, candidates)
                       for scores, positive_only in lists], len(allowed), k)


def ranked_rows(scores: np.ndarray, mask: np.ndarray, depth: int) -> np.ndarray:
    """The best ``depth`` rows of ``(n,)`` ``scores`` where ``mask`` holds, best first (ties by row)."""
    count = int(np.count_nonzero(mask))
    return top_k(scores, min(depth, count), mask)[0] if count else np.zeros(0, np.int64)


def rrf_ranked(ranked: list[np.ndarray], n: int, k: int = 60) -> np.ndarray:
    """``(n,)`` float32: sum over the ranked row lists (best first) of ``1 / (k + rank)``."""
    out = np.zeros(n, dtype=np.float32)
    for rows in ranked:
        out[rows] += 1.0 / (k + np.arange(1, len(rows) + 1, dtype=np.float32))
    return out
