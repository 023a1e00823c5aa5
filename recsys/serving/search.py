"""Product search: a text and/or image query against the catalogue's content vectors, filtered, and nudged
towards the user's taste when a user is given.

The query vector comes from the loaded :class:`~recsys.search.engine.ProductSearch` (text encoder, and the
trained alignment for images); every item is scored by its cosine to it. With a user, their feed score
(standardised over the catalogue; the fallback's blend without a feed model) adds a small personal term.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import Engine

from recsys.config import Config
from recsys.errors import UnsupportedQueryError
from recsys.ranking.rerank import FeedWeights, blend, user_features, zscore
from recsys.ranking.rerank import select as select_rows
from recsys.serving.feed import history_of, user_signals
from recsys.serving.results import Ranked
from recsys.serving.state import ServingState, allowed_mask, ranked_item


def search(st: ServingState, engine: Engine, config: Config, weights: FeedWeights, *, text: str | None, image: Any,
           user_id: str | None, k: int, category: str | None = None, available_only: bool = True,
           price_min: float | None = None, price_max: float | None = None, text_weight: float = 0.5) -> Ranked:
    """The ``k`` best matches of the query (``text_weight``: the text's share when both parts are given)."""
    engine_search = st.search
    q_parts = []
    if text is not None:
        q_parts.append((text_weight if image is not None else 1.0, engine_search.query_vector(text=text)))
    if image is not None:
        if engine_search.encode_image is None:
            raise UnsupportedQueryError(
                "image queries need a trained text-image alignment, and none is active; run `recsys train-align`"
            )
        q_parts.append((1.0 - text_weight if text is not None else 1.0, engine_search.query_vector(image=image)))
    q = sum(w * v for w, v in q_parts)
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    scores = (st.content @ q.astype(np.float32)).astype(np.float32)
    personal = False
    if user_id is not None and st.feed is not None and st.feed.exact:
        history = history_of(engine, config, st, user_id)
        if history is not None and history.items.shape[0]:
            # the user's feed score (standardised over the catalogue) nudges the query's ranking
            scores = scores + np.float32(0.05) * zscore(st.feed.scores(history)[0])
            personal = True
    elif user_id is not None:
        signals, _ = user_signals(engine, config, st, user_id)
        if len(signals.history):
            feats = user_features(signals, st.item_factors, st.content, st.popularity_z, st.freshness, st.categories)
            scores = scores + np.float32(0.05) * blend(feats, weights)
            personal = True
    allowed = allowed_mask(st, category, (), available_only)
    if price_min is not None or price_max is not None:
        allowed &= price_mask(st, price_min, price_max)
    rows = select_rows(scores, allowed, k)
    reasons = [{"type": "query_match"}] + ([{"type": "personalised"}] if personal else [])
    return Ranked([ranked_item(st, int(r), float(scores[r]), reasons) for r in rows])


def price_mask(st: ServingState, lo: float | None, hi: float | None) -> np.ndarray:
    """``(n,)`` bool: items with a known price within ``[lo, hi]`` (either bound may be ``None``)."""
    p = st.prices
    ok = ~np.isnan(p)
    if lo is not None:
        ok &= p >= lo
    if hi is not None:
        ok &= p <= hi
    return ok
