"""Similar items: the neighbour table published with the similar-items index, or a search of the index.

The table (:mod:`recsys.index.neighbours`) answers the common item-page question; the index is searched
only for questions the table cannot answer (wider lists, filters that leave too few of its rows). Answers
are cached per snapshot (LRU of ``service.similar_cache_size``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from recsys.config import Config
from recsys.errors import UnknownIdError
from recsys.serving.results import Ranked
from recsys.serving.state import ServingState, allowed_mask, ranked_item


def similar_items(st: ServingState, config: Config, lock: threading.Lock, item_id: str, *, k: int,
                  category: str | None = None, exclude: Sequence[str] = (), available_only: bool = True) -> Ranked:
    """The ``k`` items most similar to ``item_id`` (never itself), filtered; ``lock`` guards the cache."""
    r = st.row.get(item_id)
    if r is None:
        raise UnknownIdError(f"unknown item id {item_id!r}")
    size = config.service.similar_cache_size
    key = (item_id, k, category, tuple(exclude), available_only)
    if size:
        with lock:
            hit = st.similar_cache.get(key)
            if hit is not None:
                st.similar_cache.move_to_end(key)
                return hit
    others = [st.row[e] for e in exclude if e in st.row]
    if category is None and (not available_only or st.all_available):
        allow = None  # no mask to build and check: the common item-page call
    else:
        allow = allowed_mask(st, category, (), available_only)
    ids, scores = st.similar_index.neighbours_of(r, k, allow=allow, exclude=others)
    items = [
        ranked_item(st, int(i), float(s), [{"type": "similar_to", "item": item_id}])
        for i, s in zip(np.asarray(ids).ravel(), np.asarray(scores).ravel()) if int(i) >= 0
    ]
    ranked = Ranked(items)
    if size:
        with lock:
            st.similar_cache[key] = ranked
            while len(st.similar_cache) > size:
                st.similar_cache.popitem(last=False)
    return ranked
