"""Cross-modal retrieval metrics: pure functions of paired ``(n, d)`` text and image vectors.

Used to stop the alignment's training early (:mod:`recsys.align.train`) and by the H&M protocol
(:mod:`recsys.evaluation.crossmodal`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

DEFAULT_KS: tuple[int, ...] = (1, 10)
DIRECTIONS: tuple[str, str] = ("text_to_image", "image_to_text")


def retrieval_ranks(queries: np.ndarray, gallery: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Rank of each query's own target (row ``i`` of ``gallery``) under dot-product scores.

    Args:
        queries: ``(n, d)`` float, query ``i`` belongs with ``gallery[i]``.
        gallery: ``(n, d)`` float.

    Returns:
        ``(n,)`` int64, 1 = the target scored highest. Ties count against the target (a gallery item
        scoring exactly as high is ranked before it), so constant scores give rank ``n``.
    """
    q = np.asarray(queries, dtype=np.float32)
    g = np.asarray(gallery, dtype=np.float32)
    if q.ndim != 2 or g.ndim != 2 or q.shape != g.shape:
        raise ValueError(f"queries and gallery must both be (n, d) with the same shape, got {q.shape} and {g.shape}")
    ranks = np.empty(len(q), dtype=np.int64)
    for start in range(0, len(q), chunk):
        s = q[start : start + chunk] @ g.T  # (c, n)
        rows = np.arange(s.shape[0])
        own = s[rows, start + rows]
        ranks[start : start + chunk] = (s >= own[:, None]).sum(axis=1)
    return ranks


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """``R@k`` (share of queries whose target ranks ``<= k``) for each ``k``, and ``MRR``."""
    r = np.asarray(ranks, dtype=np.float64)
    if r.size == 0:
        raise ValueError("no ranks")
    out = {f"R@{k}": float(np.mean(r <= k)) for k in ks}
    out["MRR"] = float(np.mean(1.0 / r))
    return out


def crossmodal_metrics(
    text: np.ndarray, image: np.ndarray, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, dict[str, float]]:
    """Both directions for paired ``(n, d)`` text and image vectors in one space (row ``i`` = item ``i``)."""
    return {
        "text_to_image": metrics_from_ranks(retrieval_ranks(text, image), ks),
        "image_to_text": metrics_from_ranks(retrieval_ranks(image, text), ks),
    }


def chance_metrics(n: int, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Expected metrics of a uniformly random ranking of ``n`` candidates (exact, not simulated)."""
    if n <= 0:
        raise ValueError(f"n must be > 0, got {n}")
    out = {f"R@{k}": min(k, n) / n for k in ks}
    out["MRR"] = float(np.sum(1.0 / np.arange(1, n + 1)) / n)
    return out


def mean_score(metrics: Mapping[str, Mapping[str, float]], key: str = "MRR") -> float:
    """Mean of one metric over the two directions (used for early stopping and model selection)."""
    return float(np.mean([metrics[d][key] for d in DIRECTIONS]))
