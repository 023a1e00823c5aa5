"""Per-user feed scoring and reranking: pure functions of arrays.

For one user, every candidate item gets standardised features and a blended score

    score = w_cf * z(cf) + w_content * z(content) + w_pop * z(pop) + w_fresh * fresh + w_cat * cat_affinity

where ``cf`` is the folded-in user vector's dot product with the item's CF factors, ``content`` is the
cosine of the item's content vector to the user's recency-weighted profile, ``pop`` the item's
standardised popularity, ``fresh`` ``exp(-age / half_life)``, ``cat_affinity`` the share of the user's
recent events in the item's category. Filters and diversity come after.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from recsys.ranking.diversity import cap_per_category, mmr


@dataclass(frozen=True)
class FeedWeights:
    cf: float = 1.0
    content: float = 0.5
    popularity: float = 0.2
    freshness: float = 0.0
    category: float = 0.0


@dataclass(frozen=True)
class UserSignals:
    """What is known of one user, as rows of the serving catalogue.

    Attributes:
        history: ``(m,)`` catalogue rows the user touched, newest first (may repeat).
        weights: ``(m,)`` float32 recency/type weights of those events.
        cf_vector: ``(k,)`` folded-in CF vector, or ``None`` (no CF model / no warm item).
    """

    history: np.ndarray
    weights: np.ndarray
    cf_vector: np.ndarray | None = None


@dataclass(frozen=True)
class Features:
    """Standardised per-candidate features, ``(n,)`` float32 each (zeros where unknown)."""

    cf: np.ndarray
    content: np.ndarray
    popularity: np.ndarray
    freshness: np.ndarray
    category: np.ndarray
    nearest: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    """``(n,)`` the history row most similar to each candidate (-1: none)."""


def zscore(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0:
        return x
    sd = float(x.std())
    return (x - float(x.mean())) / sd if sd > 1e-12 else np.zeros_like(x)


def user_features(
    signals: UserSignals,
    item_factors: np.ndarray | None,
    content: np.ndarray | None,
    popularity_z: np.ndarray,
    freshness: np.ndarray,
    categories: Sequence[str | None],
) -> Features:
    """Features of every catalogue item for one user (``n`` = catalogue size)."""
    n = len(popularity_z)
    cf = np.zeros(n, dtype=np.float32)
    if signals.cf_vector is not None and item_factors is not None:
        cf = zscore(item_factors @ signals.cf_vector.astype(np.float32))
    cont = np.zeros(n, dtype=np.float32)
    nearest = np.full(n, -1, dtype=np.int64)
    hist = signals.history
    if content is not None and len(hist):
        w = signals.weights.astype(np.float32)
        profile = (w[:, None] * content[hist]).sum(axis=0)
        norm = float(np.linalg.norm(profile))
        if norm > 0:
            cont = zscore(content @ (profile / norm))
        recent = np.unique(hist[:20])
        sims = content @ content[recent].T  # (n, r)
        nearest = recent[np.argmax(sims, axis=1)]
    cat = np.zeros(n, dtype=np.float32)
    if len(hist):
        recent_cats = [categories[int(i)] for i in hist[:50] if categories[int(i)] is not None]
        if recent_cats:
            values, counts = np.unique(np.asarray(recent_cats, dtype=object), return_counts=True)
            share = dict(zip(values.tolist(), (counts / counts.sum()).tolist()))
            cat = np.fromiter((share.get(c, 0.0) for c in categories), dtype=np.float32, count=n)
    return Features(cf, cont, popularity_z.astype(np.float32), freshness.astype(np.float32), cat, nearest)


def blend(features: Features, weights: FeedWeights) -> np.ndarray:
    return (
        weights.cf * features.cf
        + weights.content * features.content
        + weights.popularity * features.popularity
        + weights.freshness * features.freshness
        + weights.category * features.category
    ).astype(np.float32)


def select(
    scores: np.ndarray,
    allowed: np.ndarray,
    k: int,
    *,
    vectors: np.ndarray | None = None,
    diversity: float = 0.0,
    categories: Sequence[str | None] | None = None,
    max_per_category: int | None = None,
    pool: int = 300,
) -> np.ndarray:
    """Top ``k`` allowed rows by score, then MMR (``diversity`` > 0) and per-category caps.

    Returns catalogue rows in display order.
    """
    idx = np.flatnonzero(allowed)
    if len(idx) == 0 or k <= 0:
        return np.zeros(0, dtype=np.int64)
    take = min(len(idx), max(pool, 4 * k) if (diversity > 0 or max_per_category) else k)
    part = idx[np.argpartition(-scores[idx], take - 1)[:take]] if take < len(idx) else idx
    order = part[np.lexsort((part, -scores[part]))]  # score desc, ties by row
    if diversity > 0 and vectors is not None:
        picked = mmr(scores[order].astype(np.float64), vectors[order], len(order), diversity)
        order = order[picked]
    if max_per_category and categories is not None:
        sub = cap_per_category(np.arange(len(order)), [categories[int(i)] for i in order], max_per_category, k)
        order = order[sub]
    return order[:k]


def reasons_for(row: int, features: Features, weights: FeedWeights, ids: Sequence[str]) -> list[dict[str, str]]:
    """A short list of why ``row`` was recommended: the strongest weighted contributions, best first."""
    parts = {
        "collaborative": weights.cf * float(features.cf[row]),
        "similar_to": weights.content * float(features.content[row]),
        "popular": weights.popularity * float(features.popularity[row]),
        "fresh": weights.freshness * float(features.freshness[row]),
        "category_affinity": weights.category * float(features.category[row]),
    }
    out: list[dict[str, str]] = []
    for name, value in sorted(parts.items(), key=lambda kv: -kv[1]):
        if value <= 0 or len(out) == 2:
            continue
        if name == "similar_to":
            near = int(features.nearest[row]) if len(features.nearest) else -1
            if near < 0:
                continue
            out.append({"type": "similar_to", "item": ids[near]})
        else:
            out.append({"type": name})
    return out or [{"type": "popular"}]
