"""Facet counts of a query's matching set: per category / attribute value, and per price bucket."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recsys.search.attributes import AttributeTable

PRICE = "price"


def price_label(lo: float | None, hi: float | None) -> str:
    """``"10-25"``, ``"<10"``, ``"250+"`` (numbers without a trailing ``.0``)."""
    def num(x: float) -> str:
        return f"{x:g}"

    if lo is None:
        return f"<{num(hi)}" if hi is not None else "any"
    return f"{num(lo)}+" if hi is None else f"{num(lo)}-{num(hi)}"


def price_counts(prices: np.ndarray, rows: np.ndarray, edges: Sequence[float]) -> dict[str, int]:
    """Items of ``rows`` per price bucket (upper bounds ``edges``, exclusive; the last bucket open); items
    without a price are left out. Empty buckets are left out."""
    p = prices[rows]
    p = p[~np.isnan(p)]
    if not len(p):
        return {}
    edges = sorted(edges)
    bucket = np.searchsorted(np.asarray(edges, dtype=np.float64), p, side="right")
    counts = np.bincount(bucket, minlength=len(edges) + 1)
    bounds = [None, *edges, None]
    return {price_label(bounds[i], bounds[i + 1]): int(c) for i, c in enumerate(counts) if c > 0}


def facet_counts(names: Sequence[str], rows: np.ndarray, attrs: AttributeTable, prices: np.ndarray,
                 edges: Sequence[float], top: int) -> dict[str, dict[str, int]]:
    """``{facet: {value: count}}`` over the matching ``rows`` (``(m,)`` int64).

    Raises:
        ValueError: an unknown facet name (the message lists the allowed ones).
    """
    out = {}
    for name in dict.fromkeys(names):
        out[name] = price_counts(prices, rows, edges) if name == PRICE else attrs.counts(name, rows, top)
    return out
