"""Product search: a text and/or image query ranked by :func:`recsys.search.hybrid.run_search` (lexical +
dense hybrid, attribute boosts and filters, facets: the code ``recsys search`` runs), nudged towards the
user's taste when a user is given.

With a user, their feed score (standardised over the catalogue; the fallback's blend without a feed model)
is the personal signal (``search.personal_weight``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import Engine

from recsys.config import Config
from recsys.errors import UnsupportedQueryError
from recsys.ranking.rerank import FeedWeights, blend, user_features, zscore
from recsys.search.hybrid import SearchRequest
from recsys.search.serving import ranked_search
from recsys.serving.feed import history_of, user_signals
from recsys.serving.results import Ranked
from recsys.serving.state import ServingState, ranked_item


def search(st: ServingState, engine: Engine, config: Config, weights: FeedWeights, *, text: str | None, image: Any,
           user_id: str | None, k: int, category: str | None = None, available_only: bool = True,
           price_min: float | None = None, price_max: float | None = None, text_weight: float = 0.5,
           mode: str | None = None, attributes: dict[str, Any] | None = None, facets: Sequence[str] = (),
           exclude: Sequence[str] = ()) -> Ranked:
    """The ``k`` best matches of the query (``text_weight``: the text's share when both parts are given); a
    :class:`~recsys.search.serving.SearchRanked` (items, facets, how the query was read)."""
    if image is not None and st.search.encode_image is None:
        raise UnsupportedQueryError(
            "image queries need a trained text-image alignment, and none is active; run `recsys train-align`"
        )
    request = SearchRequest(text, image, k, mode, (category,) if category is not None else None, attributes or {},
                            price_min, price_max, available_only, tuple(exclude), tuple(facets), text_weight)
    personal = personal_scores(st, engine, config, weights, user_id) if user_id is not None else None
    return ranked_search(st.search, request, config.search, personal,  # type: ignore[return-value]
                         lambda r, score, reasons: ranked_item(st, r, score, reasons), st.prices)


def personal_scores(st: ServingState, engine: Engine, config: Config, weights: FeedWeights,
                    user_id: str) -> np.ndarray | None:
    """``(n,)`` standardised feed scores of the user (``None``: no history)."""
    if st.feed is not None and st.feed.exact:
        history = history_of(engine, config, st, user_id)
        if history is not None and history.items.shape[0]:
            return zscore(st.feed.scores(history)[0])
        return None
    signals, _ = user_signals(engine, config, st, user_id)
    if len(signals.history):
        feats = user_features(signals, st.item_factors, st.content, st.popularity_z, st.freshness, st.categories)
        return blend(feats, weights)
    return None

