"""Loading the serving snapshot: everything anew (:func:`build_state`), what changed in the registry since a
snapshot was read (:func:`changes`), and the background reloads that swap a new snapshot in while the
current one goes on serving (:class:`Reloader`)."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, select

from recsys.config import Config
from recsys.search.serving import lexical_changed
from recsys.serving.indexes import (
    published_index,
    search_index,
    shared_vectors,
    similar_fingerprint,
    similar_vectors,
    user_items_index,
)
from recsys.serving.state import CATALOGUE, SEARCH_INDEX, SIMILAR_INDEX, ServingState, freshness
from recsys.store.artifacts import active_artifact
from recsys.store.models import Event, Item

log = logging.getLogger(__name__)


def catalogue_stamp(engine: Engine) -> str | None:
    """The registry's catalogue stamp (changes on every item upsert through the API)."""
    rec = active_artifact(engine, CATALOGUE)
    return None if rec is None else rec.metrics.get("stamp")


def changes(engine: Engine, st: ServingState | None) -> set[str]:
    """What the registry says changed since ``st`` was loaded: ``feed``, ``align``, ``index`` (the active
    similar-items version), ``catalogue`` (the stamp); everything when nothing is loaded. Raises when the
    database cannot be read."""
    feed = active_artifact(engine, "feed")
    al = active_artifact(engine, "align")
    ix = active_artifact(engine, f"index-{SIMILAR_INDEX}")
    stamp = catalogue_stamp(engine)
    if st is None:
        return {"feed", "align", "index", "catalogue"}
    out = set()
    if (feed.version if feed else None) != st.feed_version:
        out.add("feed")
    if (al.version if al else None) != st.align_version:
        out.add("align")
    if ix is not None and ix.version != st.versions.get("index"):
        out.add("index")
    if lexical_changed(engine, st.search):
        out.add("index")
    if st.versions.get("search") is not None:
        sx = active_artifact(engine, f"index-{SEARCH_INDEX}")
        if sx is not None and sx.version != st.versions["search"]:
            out.add("index")
    if stamp != st.catalogue_stamp:
        out.add("catalogue")
    return out


def build_state(config: Config, engine: Engine, *, text_encoder: Any, image_encoder: Any) -> ServingState:
    """Read the catalogue, popularity, feed model, alignment and indexes into a new snapshot.

    ``image_encoder``: an encoder, or a callable that builds one when an image query first needs it.
    """
    from recsys.recommend.model import load_feed_model
    from recsys.search.loader import build_product_search

    stamp = catalogue_stamp(engine)  # before the items are read: a later change reloads again
    read_at = dt.datetime.now(dt.UTC)
    search = build_product_search(engine, config, text_encoder=text_encoder, image_encoder=image_encoder)
    cat = search.catalogue
    search.dense_index, search_version = search_index(config, engine, cat.vectors)
    if search.dense_index is not None:
        _ = cat.has_vector, cat.vector_sum  # computed once now rather than by the first query
    n = len(cat)
    row = {item: i for i, item in enumerate(cat.ids)}
    with engine.connect() as conn:
        rows = conn.execute(select(Item.external_id, Item.id, Item.created_at, Item.price)).all()
        internal = {r.external_id: r.id for r in rows}
        created = {r.external_id: r.created_at for r in rows}
        price_of = {r.external_id: r.price for r in rows}
        counts = dict(
            conn.execute(select(Event.item_id, func.count(func.distinct(Event.user_id))).group_by(Event.item_id)).all()
        )
    internal_to_row = {internal[e]: r for e, r in row.items() if e in internal}
    pop = np.zeros(n, dtype=np.float32)
    for iid, c in counts.items():
        r = internal_to_row.get(iid)
        if r is not None:
            pop[r] = np.log1p(c)
    fresh = freshness([created.get(e) for e in cat.ids], time.time())
    prices = np.array([np.nan if price_of.get(e) is None else price_of[e] for e in cat.ids], dtype=np.float64)
    model = load_feed_model(engine)
    ranker = None
    factors = None
    if model is not None:
        ranker = feed_ranker(config, engine, model, cat.ids, user_items_index(config, engine, model))
        factors = ranker.components.item_factors
    similar = similar_vectors(config, cat.vectors, factors)
    align = active_artifact(engine, "align")
    index, index_version = published_index(config, engine, SIMILAR_INDEX, similar, similar_fingerprint(config, similar),
                                           table=config.service.similar_table_k)
    similar = shared_vectors(similar, index)  # the published index's mapped rows rather than a private copy
    versions = {
        "model": model.version if model else None,
        "align": align.version if align else None,
        "index": index_version,
        "lexical": getattr(search.text_index, "version", None),
        "search": search_version,
    }
    return ServingState(
        cat.ids, cat.titles, cat.categories, cat.available.astype(bool), cat.vectors, factors, pop, fresh,
        prices, row, internal_to_row, ranker, versions["model"], versions["align"], search, similar, index, versions,
        catalogue_stamp=stamp, items_read_at=read_at,
    )


def feed_ranker(config: Config, engine: Engine, model: Any, ids: Sequence[str], index_builder: Any) -> Any:
    """The feed model laid over the serving rows ``ids`` (``index_builder``: the candidate regime's index)."""
    from recsys.ranking.ranker import FeedRanker

    return FeedRanker.build(
        model, ids, lambda new: content_blocks(engine, model, new),
        exact_max_items=config.service.feed_exact_max_items, index_config=config.index,
        index_builder=index_builder,
    )


def content_blocks(engine: Engine, model: Any, ids: list[str]) -> tuple[np.ndarray, ...] | None:
    """The model's content blocks (its encoder versions) of items it was not trained with."""
    from recsys.recommend.model import content_blocks as stored_blocks

    comp = model.components
    if comp.content is None:
        return None
    blocks, found = stored_blocks(engine, np.asarray(ids, dtype=object), versions=model.encoders)
    out = []
    for b, (space, dims) in enumerate(zip(("text", "image"), (c.shape[1] for c in comp.content))):
        got = None
        if blocks is not None and space in found:
            got = blocks[list(found).index(space)]
        out.append(got if got is not None and got.shape[1] == dims else np.zeros((len(ids), dims), np.float32))
    return tuple(out)


class Reloader:
    """Runs ``update`` in a background thread on request; requests made while one runs are served by one
    more run after it. Tickets let a caller wait for a run that started after its request."""

    def __init__(self, update: Callable[[], None]) -> None:
        self._update = update
        self._cond = threading.Condition()
        self._requested = 0
        self._done = 0
        self._thread: threading.Thread | None = None

    def request(self) -> int:
        with self._cond:
            self._requested += 1
            ticket = self._requested
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="recsys-reload", daemon=True)
                self._thread.start()
        return ticket

    def wait(self, ticket: int, timeout: float | None = None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._done >= ticket, timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._done >= self._requested:
                    return
                target = self._requested
            try:
                self._update()
            except Exception:  # noqa: BLE001 - a failed background reload keeps the old state serving
                log.exception("background reload failed; serving the previous state")
            with self._cond:
                self._done = max(self._done, target)
                self._cond.notify_all()
