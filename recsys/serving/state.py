"""The serving snapshot: everything one consistent answer reads, swapped whole on reload.

A :class:`ServingState` is built by :mod:`recsys.serving.reload` (everything anew) or by
:mod:`recsys.serving.updates` (the items changed since a snapshot was read upserted into a copy of it).
The service functions (:mod:`~recsys.serving.similar`, :mod:`~recsys.serving.feed`,
:mod:`~recsys.serving.search`) read one snapshot per request and never change it (but for the
similar-items cache, which belongs to the snapshot).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.ranking.rerank import zscore
from recsys.serving.caches import AnswerCache
from recsys.serving.results import Ranked, RankedItem

SIMILAR_INDEX = "similar"
"""Name of the published item->item index (root ``<artifacts>/index-similar``)."""
CATALOGUE = "catalogue"
"""Registry kind of one row (version ``api``) whose ``metrics["stamp"]`` changes on every item upsert
through the API, so that every serving process notices the change and reloads."""
USER_ITEMS_INDEX = "user-items"
"""Name of the published index over the feed model's item factors (large catalogues' feed candidates)."""
SEARCH_INDEX = "search"
"""Name of the published index over the search catalogue's joint-space vectors (catalogues larger than
``search.exact_max_items``: dense candidates of product search)."""


@dataclass
class ServingState:
    """One consistent snapshot: swapped as a whole on reload."""

    ids: tuple[str, ...]
    titles: tuple[str, ...]
    categories: tuple[str | None, ...]
    available: np.ndarray
    content: np.ndarray  # (n, d) L2-normalised
    item_factors: np.ndarray | None  # (n, k): CF factors; mapped from content for items CF never saw
    popularity_raw: np.ndarray  # (n,) log(1 + distinct users) per item
    freshness: np.ndarray
    prices: np.ndarray  # (n,) float64, NaN where unknown
    row: dict[str, int]
    internal_to_row: dict[int, int]
    feed: Any  # FeedRanker | None
    feed_version: str | None
    align_version: str | None
    search: Any
    similar_vectors: np.ndarray
    similar_index: Any
    versions: dict[str, str | None] = field(default_factory=dict)
    catalogue_stamp: str | None = None
    """The registry's catalogue stamp when this snapshot was read (see :data:`CATALOGUE`)."""
    items_read_at: dt.datetime | None = None
    """When the items were read: items updated since (with a margin) are upserted by ``Runtime.update``."""
    similar_cache: AnswerCache[Ranked] | None = None
    """Answers of ``similar_items`` for this snapshot (LRU bounded in bytes, ``service.similar_cache_bytes``;
    made on first use); a new snapshot
    (model, index, catalogue change) starts empty, so a cached answer is never stale."""
    popularity_z: np.ndarray = field(init=False)  # popularity_raw standardised over the catalogue
    all_available: bool = field(init=False)
    category_codes: np.ndarray = field(init=False)
    """``(n,)`` int32: each item's position in ``category_index`` (-1: no category); masks by category."""
    category_index: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.popularity_z = zscore(self.popularity_raw)
        self.all_available = bool(self.available.all())
        self.category_index = {c: i for i, c in enumerate(sorted({c for c in self.categories if c is not None}))}
        self.category_codes = np.fromiter((self.category_index.get(c, -1) if c is not None else -1
                                           for c in self.categories), np.int32, len(self.categories))


def allowed_mask(st: ServingState, category: str | None, exclude: Sequence[str], available_only: bool) -> np.ndarray:
    """``(n,)`` bool: the rows a request may return (availability, category, excluded ids)."""
    allowed = st.available.copy() if available_only else np.ones(len(st.ids), dtype=bool)
    if category is not None:
        code = st.category_index.get(category)
        allowed &= st.category_codes == code if code is not None else False
    for e in exclude:
        r = st.row.get(e)
        if r is not None:
            allowed[r] = False
    return allowed


def ranked_item(st: ServingState, r: int, score: float, reasons: list[dict[str, Any]]) -> RankedItem:
    """Row ``r`` of the snapshot as an answer item."""
    return RankedItem(st.ids[r], float(score), st.titles[r], st.categories[r], reasons)


def freshness(created: Sequence[dt.datetime | None], now: float) -> np.ndarray:
    """``exp(-age in days / 30)`` per item (365 days where the creation time is unknown)."""
    age = np.array([(now - c.timestamp()) / 86400 if c else 365.0 for c in created], dtype=np.float64)
    return np.exp(-np.maximum(age, 0) / 30.0).astype(np.float32)
