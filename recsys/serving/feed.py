"""The home feed: how one user's page is answered.

The user's events are read from SQL on every request and folded in (implicit's ``recalculate_user``), so
a posted event changes the next page without retraining. With a trained feed model the page is ranked by
:class:`~recsys.ranking.ranker.FeedRanker` (the code ``recsys export`` and the offline check use), then
reshaped by diversity and per-category caps and given reasons; without one it falls back to content
similarity to the user's items plus popularity (:mod:`recsys.ranking.rerank`). Pages continue through a
signed cursor of the rows already served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from sqlalchemy import Engine, select

from recsys.cf.history import History, user_history
from recsys.config import Config
from recsys.errors import DatabaseUnavailableError
from recsys.ranking.cursor import decode_cursor, encode_cursor
from recsys.ranking.diversity import reshape
from recsys.ranking.ranker import FEED_POOL
from recsys.ranking.reasons import feed_reasons
from recsys.ranking.rerank import FeedWeights, UserSignals, blend, reasons_for, user_features
from recsys.ranking.rerank import select as select_rows
from recsys.serving.results import Feed
from recsys.serving.state import ServingState, allowed_mask, ranked_item
from recsys.store.models import Event, User
from recsys.store.outage import OutageLog, database_errors


def user_events(engine: Engine, config: Config, st: ServingState, user_id: str
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The user's events on servable items with a positive type weight: ``(rows, ts, weights)``, each ``(m,)``."""
    types = config.event_types
    with database_errors(), engine.connect() as conn:  # an outage: DatabaseUnavailableError
        uid = conn.execute(select(User.id).where(User.external_id == user_id)).scalar_one_or_none()
        events = [] if uid is None else conn.execute(
            select(Event.item_id, Event.event_type, Event.ts).where(Event.user_id == uid).order_by(Event.ts, Event.id)
        ).all()
    rows, ts, weights = [], [], []
    for iid, etype, t in events:
        r = st.internal_to_row.get(iid)
        w = types.get(etype, 0.0)
        if r is None or w <= 0:
            continue
        rows.append(r)
        ts.append(int(t))
        weights.append(w)
    return np.asarray(rows, dtype=np.int64), np.asarray(ts, dtype=np.int64), np.asarray(weights, dtype=np.float32)


Events = tuple[np.ndarray, np.ndarray, np.ndarray]
"""``(rows, ts, weights)``, each ``(m,)``: a user's events as :func:`user_events` gives them."""


def events_or_none(engine: Engine, config: Config, st: ServingState, user_id: str,
                   outages: OutageLog | None = None) -> tuple[Events, bool]:
    """The user's events, or none and ``True`` (degraded) while the database is unreachable (logged through
    ``outages``, once per interval)."""
    try:
        return user_events(engine, config, st, user_id), False
    except DatabaseUnavailableError as exc:
        if outages is not None:
            outages.report("database", exc)
        return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)), True


def user_signals(engine: Engine, config: Config, st: ServingState, user_id: str,
                 events: Events | None = None) -> tuple[UserSignals, np.ndarray]:
    """Fallback features (no feed model): the user's items newest first with recency weights, and the
    ``(s,)`` distinct rows they have seen (``events``: already read, else read now)."""
    rows, _ts, w = events if events is not None else user_events(engine, config, st, user_id)
    rows, w = rows[::-1], w[::-1]
    hist, weights = [], []
    distinct: set[int] = set()
    for r, wi in zip(rows, w):
        distinct.add(int(r))  # recency by how many distinct items came since (newest first)
        hist.append(int(r))
        weights.append(float(wi) * (1.0 + 2.0 * np.exp(-len(distinct) / 10.0)))
    seen = np.unique(np.asarray(hist, dtype=np.int64))
    return UserSignals(np.asarray(hist, dtype=np.int64), np.asarray(weights, dtype=np.float32), None), seen


def history_of(engine: Engine, config: Config, st: ServingState, user_id: str,
               events: Events | None = None, ranker: Any = None) -> History | None:
    """The user's :class:`~recsys.cf.history.History` row as the feed model sees it (``None`` without one;
    ``events``: already read, else read now; ``ranker``: the feed ranker, default the snapshot's)."""
    fr = ranker if ranker is not None else st.feed
    if fr is None:
        return None
    rows, ts, w = events if events is not None else user_events(engine, config, st, user_id)
    return user_history([rows], [ts], [w / np.float32(fr.model.weight_scale)], fr.tie_rank, len(st.ids))


def neighbours(st: ServingState) -> Any:
    """``(rows, n) -> rows``: similar items of some items, from the similar-items index."""
    def near(rows: np.ndarray, n: int) -> np.ndarray:
        ids, _ = st.similar_index.search(st.similar_vectors[rows], n + 1)
        ids = np.asarray(ids).ravel()
        return ids[ids >= 0]

    return near


def recommend(st: ServingState, engine: Engine, config: Config, secret: bytes, weights: FeedWeights, user_id: str, *,
              k: int, exclude_seen: bool = True, category: str | None = None, exclude: Sequence[str] = (),
              diversity: float = 0.0, max_per_category: int | None = None, cursor: str | None = None,
              outages: OutageLog | None = None, ranker: Any = None) -> Feed:
    """One page of the user's home feed (``secret`` signs the paging cursor; ``weights``: the fallback's;
    ``ranker``: a feed ranker other than the snapshot's, e.g. an experiment variant's).
    While the database is unreachable the page is computed without the user's events, ``degraded``."""
    served = decode_cursor(cursor, user_id, secret) if cursor else []
    allowed = allowed_mask(st, category, exclude, True)
    if served:
        s_rows = np.asarray(served, dtype=np.int64)
        allowed[s_rows[(s_rows >= 0) & (s_rows < len(allowed))]] = False
    events, degraded = events_or_none(engine, config, st, user_id, outages)
    fr = ranker if ranker is not None else st.feed
    if fr is None:
        signals, seen = user_signals(engine, config, st, user_id, events)
        page = fallback_feed(st, signals, seen, weights, secret, user_id, k, allowed, exclude_seen, diversity,
                             max_per_category, served)
        return replace(page, degraded=degraded)
    history = history_of(engine, config, st, user_id, events, fr)
    assert history is not None
    cold = history.items.shape[0] == 0
    pooled = diversity > 0 or bool(max_per_category)
    ranking = fr.rank(history, k, allowed, exclude_seen=exclude_seen, pool=FEED_POOL if pooled else None,
                           neighbours=neighbours(st))
    valid = ranking.rows[0] >= 0
    rows = ranking.rows[0][valid]
    scores = ranking.scores[0][valid]
    pick = reshape(rows, scores, k, vectors=st.content, categories=st.categories, diversity=diversity,
                   max_per_category=max_per_category)
    p = fr.model.params
    history_items = history.items
    items = []
    for j in pick:
        r = int(rows[j])
        reasons = [{"type": "popular"}] if cold else feed_reasons(
            r, bool(fr.components.warm[r]), float(ranking.cf[0][valid][j]), float(ranking.content[0][valid][j]),
            float(ranking.pop[0][valid][j]), p, history_items, st.content, st.ids)
        items.append(ranked_item(st, r, float(scores[j]), reasons))
    exclude_n = len(history_items) if exclude_seen else 0
    more = int(allowed.sum()) - exclude_n > len(items)
    nxt = encode_cursor(user_id, [*served, *[st.row[i.id] for i in items]], secret) if more and items else None
    return Feed(items, degraded=degraded, cold_start=cold, next_cursor=nxt)


def fallback_feed(st: ServingState, signals: UserSignals, seen: np.ndarray, weights: FeedWeights, secret: bytes,
                  user_id: str, k: int, allowed: np.ndarray, exclude_seen: bool, diversity: float,
                  max_per_category: int | None, served: list[int]) -> Feed:
    """No trained feed model: content similarity to the user's items plus popularity."""
    cold = len(signals.history) == 0
    feats = user_features(signals, st.item_factors, st.content, st.popularity_z, st.freshness, st.categories)
    w = FeedWeights(cf=0, content=0, popularity=1.0) if cold else weights
    scores = blend(feats, w)
    if exclude_seen and len(seen):
        allowed[seen] = False
    rows = select_rows(scores, allowed, k, vectors=st.content, diversity=diversity, categories=st.categories,
                       max_per_category=max_per_category)
    items = [
        ranked_item(st, int(r), float(scores[r]),
                    [{"type": "popular"}] if cold else reasons_for(int(r), feats, w, st.ids))
        for r in rows
    ]
    more = int(allowed.sum()) > len(rows)
    nxt = encode_cursor(user_id, [*served, *[int(r) for r in rows]], secret) if more and len(rows) else None
    return Feed(items, cold_start=cold, next_cursor=nxt)
