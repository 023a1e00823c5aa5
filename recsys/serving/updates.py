"""Incremental catalogue updates: the items changed since a snapshot was read, upserted into a copy of it.

The same per-item computations as a full load (:func:`recsys.serving.reload.build_state`) on the changed
rows only: new items are appended as rows, changed ones replaced; the feed ranker is laid over the new
ids again, and the indexes (similar items, feed candidates, product search) take the rows into their side buffers (copies: the old snapshot keeps serving
its own). Popularity counts are refreshed by full reloads only.
"""

from __future__ import annotations

import copy
import datetime as dt
import time
from dataclasses import replace

import numpy as np
from sqlalchemy import Engine, select

from recsys.config import Config
from recsys.search.serving import with_text_rows
from recsys.serving.indexes import similar_vectors, user_items_index, with_rows
from recsys.serving.reload import catalogue_stamp, feed_ranker
from recsys.serving.state import ServingState, freshness
from recsys.store.models import Item

UPDATE_MARGIN_S = 300.0
"""Incremental updates re-read the items updated up to this long before the state was read (clock skew
between serving hosts and the database; re-reading an item is harmless)."""


def extend_state(config: Config, engine: Engine, st: ServingState) -> ServingState | None:
    """``st`` with the items updated since it was read upserted, or ``None`` when a full reload is needed
    (no incremental loader, or more changed rows than ``index.max_buffered`` allows)."""
    search = st.search
    if search.rows_loader is None or st.items_read_at is None:
        return None
    stamp = catalogue_stamp(engine)
    read_at = dt.datetime.now(dt.UTC)
    since = st.items_read_at - dt.timedelta(seconds=UPDATE_MARGIN_S)
    with engine.connect() as conn:
        rows = conn.execute(
            select(Item.id, Item.external_id, Item.created_at, Item.price).where(Item.updated_at >= since)
        ).all()
    sub = search.rows_loader(np.asarray([r.id for r in rows], dtype=np.int64)) if rows else None
    cat, changed = search.catalogue.with_rows(sub) if sub is not None else (search.catalogue, np.zeros(0, np.int64))
    n_old, n = len(st.ids), len(cat)
    by_id = {r.external_id: r for r in rows}
    row, internal_to_row = st.row, st.internal_to_row
    if len(changed):
        limit = min(config.index.max_buffered, int(config.index.max_buffered_fraction * n))
        if st.similar_index.buffer_size + len(changed) > limit:
            return None
        row, internal_to_row = dict(row), dict(internal_to_row)
        for r in changed:
            item = cat.ids[r]
            row[item] = int(r)
            internal_to_row[by_id[item].id] = int(r)
    prices = np.full(n, np.nan, np.float64)
    prices[:n_old] = st.prices
    for rec in rows:  # a price change alone leaves the catalogue rows as they were
        r = row.get(rec.external_id)
        if r is not None:
            prices[r] = np.nan if rec.price is None else rec.price
    text_rows = np.asarray(sorted({row[r.external_id] for r in rows if r.external_id in row}), np.int64)
    if not len(changed):  # attributes or the description alone may have changed: the lexical side buffer
        return replace(st, prices=prices, catalogue_stamp=stamp, items_read_at=read_at, similar_cache=None,
                       search=with_text_rows(engine, search, cat, text_rows))
    fresh = np.empty(n, np.float32)
    fresh[:n_old] = st.freshness
    pop = np.zeros(n, np.float32)
    pop[:n_old] = st.popularity_raw
    fresh[changed] = freshness([by_id[cat.ids[r]].created_at for r in changed], time.time())
    ranker, factors = None, None
    if st.feed is not None:
        old_index = st.feed.factor_index
        builder = user_items_index(config, engine, st.feed.model) if old_index is None else (
            lambda f, queries: with_rows(old_index, f, changed, n_old))
        ranker = feed_ranker(config, engine, st.feed.model, cat.ids, builder)
        factors = ranker.components.item_factors
    similar = np.empty((n, st.similar_vectors.shape[1]), np.float32)
    similar[:n_old] = st.similar_vectors
    similar[changed] = similar_vectors(config, cat.vectors[changed], None if factors is None else factors[changed])
    index = with_rows(st.similar_index, similar, changed, n_old)
    new_search = with_text_rows(engine, search, cat, text_rows)  # the catalogue, the lexical side buffer
    if search.dense_index is not None:  # product search's index: the same rows into its side buffer
        new_search = copy.copy(new_search) if new_search is search else new_search
        new_search.dense_index = with_rows(search.dense_index, cat.vectors, changed, n_old)
        _ = cat.has_vector, cat.vector_sum  # computed once now rather than by the first query
    return ServingState(
        cat.ids, cat.titles, cat.categories, cat.available.astype(bool), cat.vectors, factors, pop, fresh,
        prices, row, internal_to_row, ranker, st.feed_version, st.align_version, new_search, similar, index,
        dict(st.versions), catalogue_stamp=stamp, items_read_at=read_at,
    )
