"""What the service holds in memory and the service functions its routes call.

:class:`Runtime` loads the catalogue (content vectors from ``item_embeddings``, fused through the
active alignment when there is one), the active feed model (``recsys train``: the evaluated hybrid,
:mod:`recsys.recommend`), popularity from the events table and a retrieval index over the item vectors.
It answers similar items, home-feed pages, search, event batches and item upserts. A newer active feed,
alignment or index artifact in the registry, or items put through another process (the catalogue stamp),
are noticed by ``refresh_if_changed`` (checked at most every few seconds) and loaded by a background
thread while the current state goes on serving; builds are serialised, and a state is swapped in whole.

Similar items read the neighbour table published with the similar-items index
(:mod:`recsys.index.neighbours`) and search the index only for questions the table cannot answer. Items
put through the API reach the published indexes through their side buffers (no rebuild) while the
change is small (``index.max_buffered``).

The home feed ranks with :class:`~recsys.recommend.ranker.FeedRanker`, the code ``recsys export`` and
the offline check use: the user's events are read from SQL on every request and folded in (implicit's
``recalculate_user``), so a posted event changes the next page without retraining. Without a trained
feed model the feed falls back to content similarity to the user's items plus popularity.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, select

from recsys.config import Config
from recsys.errors import ArtifactError, RecsysError, UnknownIdError, UnsupportedQueryError
from recsys.ranking.cursor import decode_cursor, encode_cursor
from recsys.ranking.rerank import FeedWeights, UserSignals, blend, reasons_for, select as select_rows, user_features, zscore
from recsys.recommend.ranker import FEED_POOL
from recsys.recommend.ranker import reshape as reshape_pool
from recsys.search.serving import lexical_changed, rebuild_lexical, with_text_rows
from recsys.store.artifacts import active_artifact
from recsys.store.models import Event, Item

log = logging.getLogger(__name__)

SIMILAR_INDEX = "similar"
"""Name of the published item->item index (root ``<artifacts>/index-similar``)."""
CATALOGUE = "catalogue"
"""Registry kind of one row (version ``api``) whose ``metrics["stamp"]`` changes on every item upsert
through the API, so that every serving process notices the change and reloads."""
USER_ITEMS_INDEX = "user-items"
"""Name of the published index over the feed model's item factors (large catalogues' feed candidates)."""


UPDATE_MARGIN_S = 300.0
"""Incremental updates re-read the items updated up to this long before the state was read (clock skew
between serving hosts and the database; re-reading an item is harmless)."""


def _freshness(created: Sequence[dt.datetime | None], now: float) -> np.ndarray:
    """``exp(-age in days / 30)`` per item (365 days where the creation time is unknown)."""
    age = np.array([(now - c.timestamp()) / 86400 if c else 365.0 for c in created], dtype=np.float64)
    return np.exp(-np.maximum(age, 0) / 30.0).astype(np.float32)


def _with_rows(index: Any, vectors: np.ndarray, rows: np.ndarray, n_old: int) -> Any:
    """A copy of ``index`` (sharing its base) with ``vectors[rows]`` replaced (rows < ``n_old``) or appended
    (the rows from ``n_old`` on, in order) through its side buffer; ``None`` in, ``None`` out."""
    if index is None:
        return None
    if index.size != n_old:
        raise ValueError(f"the index holds {index.size} rows, the state {n_old}")
    out = index.copy()
    old = np.sort(rows[rows < n_old])
    if len(old):
        out.update(old, vectors[old])
    if len(vectors) > n_old:
        out.add(vectors[n_old:])
    return out


def _fingerprint(vectors: np.ndarray) -> str:
    """What a published index records of the vectors it was built from (reused when they match)."""
    return hashlib.sha1(np.ascontiguousarray(vectors).tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class RankedItem:
    id: str
    score: float
    title: str | None
    category: str | None
    reasons: list[dict[str, Any]]


@dataclass(frozen=True)
class Ranked:
    items: list[RankedItem]


@dataclass(frozen=True)
class Feed(Ranked):
    cold_start: bool = False
    next_cursor: str | None = None


@dataclass
class _State:
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
    similar_cache: OrderedDict[tuple[Any, ...], Ranked] = field(default_factory=OrderedDict)
    """Answers of ``similar_items`` for this snapshot (LRU, ``service.similar_cache_size``); a new snapshot
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


class Runtime:
    """Loaded models and indexes, plus the service functions. Thread-safe for reads."""

    def __init__(self, config: Config, engine: Engine, *, text_encoder: Any = None, image_encoder: Any = None) -> None:
        """``text_encoder`` / ``image_encoder``: default built from ``config.encoders`` when first needed."""
        self.config = config
        self.engine = engine
        self._image_encoder = image_encoder
        self.weights = FeedWeights()
        self._lock = threading.Lock()
        self._state: _State | None = None
        self._load_error: str | None = None
        self._checked = 0.0
        self._reload_lock = threading.Lock()  # one build at a time; a later one always starts after an earlier
        self._reloads = threading.Condition()
        self._reload_requested = 0
        self._reload_done = 0
        self._reloader: threading.Thread | None = None
        self._secret = hashlib.sha256(f"recsys-cursor:{config.database_url}".encode()).digest()
        self._text_encoder: Any = text_encoder

    @classmethod
    def from_config(cls, config: Config) -> Runtime:
        from recsys.store.db import engine_from_config

        rt = cls(config, engine_from_config(config))
        rt.reload()
        return rt

    # ------------------------------------------------------------------ loading
    def reload(self) -> None:
        """Load everything anew and swap it in; on failure keep serving the old state and report not ready.

        Builds are serialised: a reload that starts while another runs waits for it, then reads the
        database as it is then."""
        with self._reload_lock:
            try:
                state = self._build()
            except RecsysError as exc:
                self._load_error = str(exc)
                log.warning("runtime not ready: %s", exc)
                return
            with self._lock:
                self._state = state
                self._load_error = None
        log.info("runtime loaded: %d items, versions %s", len(state.ids), state.versions)

    def update(self) -> None:
        """Bring the state up to date. When the model, alignment and index versions are the loaded ones, only
        the items changed since the state was read are upserted into it (:meth:`_extend`: seconds at a
        million items); otherwise, or when that fails or the change is too large, everything is loaded anew."""
        with self._reload_lock:
            st = self._state
            new = None
            if st is not None:
                try:
                    if self._changes(st) <= {"catalogue"}:
                        new = self._extend(st)
                except Exception:  # noqa: BLE001 - fall back to a full reload
                    log.exception("incremental update failed; reloading everything")
                    new = None
            if new is not None:
                with self._lock:
                    self._state = new
                log.info("runtime updated: %d items (%d new)", len(new.ids), len(new.ids) - len(st.ids))
                return
        self.reload()

    def _changes(self, st: _State | None) -> set[str]:
        """What the registry says changed since ``st`` was loaded: ``feed``, ``align``, ``index`` (the active
        similar-items version), ``catalogue`` (the stamp); everything when nothing is loaded. Raises when the
        database cannot be read."""
        feed = active_artifact(self.engine, "feed")
        al = active_artifact(self.engine, "align")
        ix = active_artifact(self.engine, f"index-{SIMILAR_INDEX}")
        stamp = self._catalogue_stamp()
        if st is None:
            return {"feed", "align", "index", "catalogue"}
        out = set()
        if (feed.version if feed else None) != st.feed_version:
            out.add("feed")
        if (al.version if al else None) != st.align_version:
            out.add("align")
        if ix is not None and ix.version != st.versions.get("index"):
            out.add("index")
        if lexical_changed(self.engine, st.search):
            out.add("index")
        if stamp != st.catalogue_stamp:
            out.add("catalogue")
        return out

    def _extend(self, st: _State) -> _State | None:
        """``st`` with the items updated since it was read upserted (new items appended as rows, changed ones
        replaced), or ``None`` when a full reload is needed (more changed rows than ``index.max_buffered``).

        The same per-item computations as :meth:`_build` on the changed rows only; the feed ranker is laid
        over the new ids again, the indexes get the rows in their side buffers (copies: the old state keeps
        serving its own). Popularity counts are refreshed by full reloads only.
        """
        search = st.search
        if search.rows_loader is None or st.items_read_at is None:
            return None
        stamp = self._catalogue_stamp()
        read_at = dt.datetime.now(dt.UTC)
        since = st.items_read_at - dt.timedelta(seconds=UPDATE_MARGIN_S)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Item.id, Item.external_id, Item.created_at, Item.price).where(Item.updated_at >= since)
            ).all()
        sub = search.rows_loader(np.asarray([r.id for r in rows], dtype=np.int64)) if rows else None
        cat, changed = search.catalogue.with_rows(sub) if sub is not None else (search.catalogue, np.zeros(0, np.int64))
        n_old, n = len(st.ids), len(cat)
        by_id = {r.external_id: r for r in rows}
        row, internal_to_row = st.row, st.internal_to_row
        if len(changed):
            limit = min(self.config.index.max_buffered, int(self.config.index.max_buffered_fraction * n))
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
            return replace(st, prices=prices, catalogue_stamp=stamp, items_read_at=read_at, similar_cache=OrderedDict(),
                           search=with_text_rows(self.engine, search, cat, text_rows))
        freshness = np.empty(n, np.float32)
        freshness[:n_old] = st.freshness
        pop = np.zeros(n, np.float32)
        pop[:n_old] = st.popularity_raw
        freshness[changed] = _freshness([by_id[cat.ids[r]].created_at for r in changed], time.time())
        ranker, factors = None, None
        if st.feed is not None:
            old_index = st.feed.factor_index
            builder = self._user_items_index(st.feed.model) if old_index is None else (
                lambda f, queries: _with_rows(old_index, f, changed, n_old))
            ranker = self._feed_ranker(st.feed.model, cat.ids, builder)
            factors = ranker.components.item_factors
        similar = np.empty((n, st.similar_vectors.shape[1]), np.float32)
        similar[:n_old] = st.similar_vectors
        similar[changed] = self._similar_vectors(cat.vectors[changed], None if factors is None else factors[changed])
        index = _with_rows(st.similar_index, similar, changed, n_old)
        new_search = with_text_rows(self.engine, search, cat, text_rows)  # the catalogue, the lexical side buffer
        return _State(
            cat.ids, cat.titles, cat.categories, cat.available.astype(bool), cat.vectors, factors, pop, freshness,
            prices, row, internal_to_row, ranker, st.feed_version, st.align_version, new_search, similar, index,
            dict(st.versions), catalogue_stamp=stamp, items_read_at=read_at,
        )

    def request_reload(self) -> int:
        """Reload in a background thread while the current state goes on serving; returns a ticket for
        :meth:`wait_reload`. Requests made while a reload runs are served by one more reload after it."""
        with self._reloads:
            self._reload_requested += 1
            ticket = self._reload_requested
            if self._reloader is None or not self._reloader.is_alive():
                self._reloader = threading.Thread(target=self._reload_loop, name="recsys-reload", daemon=True)
                self._reloader.start()
        return ticket

    def wait_reload(self, ticket: int, timeout: float | None = None) -> bool:
        """Wait until a reload that started after ``ticket`` was requested has finished; False on timeout."""
        with self._reloads:
            return self._reloads.wait_for(lambda: self._reload_done >= ticket, timeout)

    def _reload_loop(self) -> None:
        while True:
            with self._reloads:
                if self._reload_done >= self._reload_requested:
                    return
                target = self._reload_requested
            try:
                self.update()
            except Exception:  # noqa: BLE001 - a failed background reload keeps the old state serving
                log.exception("background reload failed; serving the previous state")
            with self._reloads:
                self._reload_done = max(self._reload_done, target)
                self._reloads.notify_all()

    def refresh_if_changed(self, every_s: float = 2.0, *, wait: bool = False) -> bool:
        """Reload (in the background, or at once with ``wait``) when the registry's active feed, alignment
        or similar-items index version, or the catalogue stamp, differs from the loaded one: a new model, a
        rebuilt index (``recsys index rebuild``) or items put through another process are picked up without
        a restart. Returns whether a reload was started."""
        now = time.monotonic()
        if now - self._checked < every_s:
            return False
        self._checked = now
        try:
            changed = self._changes(self._state)
        except Exception:  # noqa: BLE001 - the database being down is reported by readiness, not here
            return False
        if changed:
            ticket = self.request_reload()
            if wait:
                self.wait_reload(ticket)
            return True
        return False

    def _catalogue_stamp(self) -> str | None:
        rec = active_artifact(self.engine, CATALOGUE)
        return None if rec is None else rec.metrics.get("stamp")

    def _build(self) -> _State:
        from recsys.recommend.model import load_feed_model
        from recsys.search.loader import build_product_search

        stamp = self._catalogue_stamp()  # before the items are read: a later change reloads again
        read_at = dt.datetime.now(dt.UTC)
        search = build_product_search(
            self.engine, self.config, text_encoder=self._text_encoder_obj(),
            image_encoder=self._image_encoder if self._image_encoder is not None else self._image_encoder_obj,
        )
        cat = search.catalogue
        n = len(cat)
        row = {item: i for i, item in enumerate(cat.ids)}
        with self.engine.connect() as conn:
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
        now = time.time()
        freshness = _freshness([created.get(e) for e in cat.ids], now)
        prices = np.array([np.nan if price_of.get(e) is None else price_of[e] for e in cat.ids], dtype=np.float64)
        model = load_feed_model(self.engine)
        ranker = None
        factors = None
        if model is not None:
            ranker = self._feed_ranker(model, cat.ids, self._user_items_index(model))
            factors = ranker.components.item_factors
        similar = self._similar_vectors(cat.vectors, factors)
        align = active_artifact(self.engine, "align")
        index, index_version = self._published_index(SIMILAR_INDEX, similar, self._similar_fingerprint(similar),
                                                      table=self.config.service.similar_table_k)
        versions = {
            "model": model.version if model else None,
            "align": align.version if align else None,
            "index": index_version,
            "lexical": getattr(search.text_index, "version", None),
        }
        return _State(
            cat.ids, cat.titles, cat.categories, cat.available.astype(bool), cat.vectors, factors, pop, freshness,
            prices, row, internal_to_row, ranker, versions["model"], versions["align"], search, similar, index, versions,
            catalogue_stamp=stamp, items_read_at=read_at,
        )

    def _feed_ranker(self, model: Any, ids: Sequence[str], index_builder: Any) -> Any:
        """The feed model laid over the serving rows ``ids`` (``index_builder``: the candidate regime's index)."""
        from recsys.recommend.ranker import FeedRanker

        return FeedRanker.build(
            model, ids, lambda new: self._content_blocks(model, new),
            exact_max_items=self.config.service.feed_exact_max_items, index_config=self.config.index,
            index_builder=index_builder,
        )

    def _user_items_index(self, model: Any) -> Any:
        """The candidate regime's index over unit item factors: the published one (built when missing)."""
        return lambda f, queries: self._published_index(
            USER_ITEMS_INDEX, f, f"{model.version}-{_fingerprint(f)}", queries)[0]

    def _text_encoder_obj(self) -> Any:
        if self._text_encoder is None:
            from recsys.encoders.factory import build_text_encoder

            self._text_encoder = build_text_encoder(self.config.encoders.text, self.config.encoders.device)
        return self._text_encoder

    def _similar_fingerprint(self, vectors: np.ndarray) -> str:
        return f"{_fingerprint(vectors)}-t{self.config.service.similar_table_k}"

    def _published_index(self, name: str, vectors: np.ndarray, fingerprint: str,
                         queries: np.ndarray | None = None, *, force: bool = False, table: int = 0) -> tuple[Any, str]:
        """The active published index ``name`` when it was built from these vectors; the active one with
        the rows that differ in its side buffer when few do (not published: the buffer is the catalogue's
        change since that version); else a new one.

        A new index is built, then published atomically under ``<artifacts>/index-<name>`` and marked
        active in the registry (kind ``index-<name>``), so other workers and restarts load it instead of
        building it again; the whole step runs under a file lock, so workers starting together build once.
        A failed publish is logged and the in-memory index is served anyway.
        ``force``: always build and publish (a failed publish raises). ``table``: a new index gets a
        :class:`~recsys.index.neighbours.NeighbourTable` of this width, saved with it (0: none); the
        fingerprint should say the width, so that a changed width builds anew.
        """
        from recsys.index.publish import root_lock

        root = self.config.artifacts_path / f"index-{name}"
        with root_lock(root, ".build.lock"):  # workers starting together: one builds, the others load it
            return self._find_or_build_index(name, root, vectors, fingerprint, queries, force=force, table=table)

    def _active_index_version(self, name: str, root: Any) -> str | None:
        """The registry's active version of ``index-<name>`` when its directory is complete, else ``CURRENT``."""
        from recsys.index.manifest import MANIFEST
        from recsys.index.publish import active_version

        rec = active_artifact(self.engine, f"index-{name}")
        if rec is not None and (root / rec.version / MANIFEST).is_file():
            return rec.version
        return active_version(root)

    def _find_or_build_index(self, name: str, root: Any, vectors: np.ndarray, fingerprint: str,
                             queries: np.ndarray | None, *, force: bool, table: int) -> tuple[Any, str]:
        from recsys.index.factory import build_index
        from recsys.index.manifest import load_retriever, read_manifest
        from recsys.index.publish import prune, publish

        retriever = None
        try:
            current = None if force else self._active_index_version(name, root)
            if current is not None:
                info = read_manifest(root / current).get("info") or {}
                if info.get("fingerprint") == fingerprint and info.get("n", len(vectors)) == len(vectors):
                    retriever = load_retriever(root / current)
                    if retriever.size == len(vectors):
                        return retriever, current
                retriever = self._derived_index(root, current, info, vectors, table)
                if retriever is not None:  # the active version plus a side buffer: served, not published
                    return retriever, current
        except (ArtifactError, OSError, ValueError) as exc:
            log.warning("index %s: cannot use the published version (%s); building a new one", name, exc)
            retriever = None
        retriever = build_index(vectors, self.config.index, queries=queries)
        if table > 0:
            from recsys.index.neighbours import build_neighbours

            t0 = time.perf_counter()
            retriever.neighbours = build_neighbours(retriever, table, vectors=vectors)
            retriever.info["neighbours"] = {"width": table, "build_seconds": round(time.perf_counter() - t0, 3)}
        retriever.info["fingerprint"] = fingerprint
        retriever.info["n"] = len(vectors)
        try:
            version = publish(retriever, root, engine=self.engine, kind=f"index-{name}")
            prune(root, keep=3)
        except Exception as exc:  # noqa: BLE001 - serving goes on with the in-memory index
            if force:
                raise
            log.warning("index %s: could not publish (%s); serving an unpublished in-memory index", name, exc)
            version = f"unpublished-{fingerprint[:10]}"
        return retriever, version

    def _derived_index(self, root: Any, current: str, info: dict[str, Any], vectors: np.ndarray, table: int) -> Any:
        """The active index of ``root`` brought to ``vectors`` through its side buffer (items added or
        changed since its build, at most ``index.max_buffered`` rows and ``index.max_buffered_fraction`` of
        them), or ``None``: rebuild."""
        from recsys.index.manifest import load_retriever

        cfg = self.config.index
        limit = min(cfg.max_buffered, int(cfg.max_buffered_fraction * len(vectors)))
        if limit <= 0 or (info.get("neighbours") or {}).get("width", 0) != table:
            return None
        retriever = load_retriever(root / current)
        t0 = time.perf_counter()
        if not retriever.apply_rows(vectors, max_buffered=limit):
            return None
        retriever.info["derived_from"] = current
        log.info("index %s: %s brought up to date through its side buffer (%d rows buffered) in %.2fs",
                 root.name, current, retriever.buffer_size, time.perf_counter() - t0)
        return retriever

    def _content_blocks(self, model: Any, ids: list[str]) -> tuple[np.ndarray, ...] | None:
        """The model's content blocks (its encoder versions) of items it was not trained with."""
        from recsys.recommend.model import content_blocks

        comp = model.components
        if comp.content is None:
            return None
        blocks, found = content_blocks(self.engine, np.asarray(ids, dtype=object), versions=model.encoders)
        out = []
        for b, (space, dims) in enumerate(zip(("text", "image"), (c.shape[1] for c in comp.content))):
            got = None
            if blocks is not None and space in found:
                got = blocks[list(found).index(space)]
            out.append(got if got is not None and got.shape[1] == dims else np.zeros((len(ids), dims), np.float32))
        return tuple(out)

    def _similar_vectors(self, content: np.ndarray, factors: np.ndarray | None) -> np.ndarray:
        """Item->item space: content blended with normalised CF factors (co-interaction similarity), with the
        shares ``service.similar_content_weight`` / ``service.similar_cf_weight`` of the cosine."""
        svc = self.config.service
        w_content = svc.similar_content_weight
        w_cf = svc.similar_cf_weight if factors is not None else 0.0
        total = w_content + w_cf
        parts = [content * np.float32(np.sqrt(w_content / total))]
        if factors is not None and w_cf > 0:
            norm = np.linalg.norm(factors, axis=1, keepdims=True)
            unit = np.where(norm > 0, factors / np.maximum(norm, 1e-12), 0).astype(np.float32)
            parts.append(unit * np.float32(np.sqrt(w_cf / total)))
        v = np.hstack(parts).astype(np.float32)
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        return v

    def rebuild_index(self) -> str:
        """Build the similar-items index anew from the loaded vectors and publish it as the active version.

        Serving processes pick it up at their next ``refresh_if_changed``. Returns the new version.
        """
        st = self._st()
        _, version = self._published_index(SIMILAR_INDEX, st.similar_vectors,
                                           self._similar_fingerprint(st.similar_vectors), force=True,
                                           table=self.config.service.similar_table_k)
        rebuild_lexical(self.engine, self.config, st.search)
        self.reload()
        return version

    def _st(self) -> _State:
        st = self._state
        if st is None:
            raise ArtifactError(f"the service is not ready: {self._load_error or 'nothing loaded'}")
        return st

    # ------------------------------------------------------------------ status
    def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, Any] = {}
        try:
            with self.engine.connect() as conn:
                conn.execute(select(1))
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - reported as a failed check
            checks["database"] = f"unreachable: {type(exc).__name__}"
        st = self._state
        checks["artifacts"] = "ok" if st is not None else f"not loaded: {self._load_error}"
        if st is not None:
            checks["items"] = len(st.ids)
            checks["model"] = st.feed_version or "none (content and popularity only)"
        return checks["database"] == "ok" and st is not None, checks

    def versions(self) -> dict[str, str | None]:
        st = self._state
        return dict(st.versions) if st else {}

    # ------------------------------------------------------------------ helpers
    def _allowed(self, st: _State, category: str | None, exclude: Sequence[str], available_only: bool) -> np.ndarray:
        allowed = st.available.copy() if available_only else np.ones(len(st.ids), dtype=bool)
        if category is not None:
            code = st.category_index.get(category)
            allowed &= st.category_codes == code if code is not None else False
        for e in exclude:
            r = st.row.get(e)
            if r is not None:
                allowed[r] = False
        return allowed

    def _item(self, st: _State, r: int, score: float, reasons: list[dict[str, Any]]) -> RankedItem:
        return RankedItem(st.ids[r], float(score), st.titles[r], st.categories[r], reasons)

    # ------------------------------------------------------------------ similar items
    def similar_items(self, item_id: str, *, k: int, category: str | None = None, exclude: Sequence[str] = (),
                      available_only: bool = True) -> Ranked:
        st = self._st()
        r = st.row.get(item_id)
        if r is None:
            raise UnknownIdError(f"unknown item id {item_id!r}")
        size = self.config.service.similar_cache_size
        key = (item_id, k, category, tuple(exclude), available_only)
        if size:
            with self._lock:
                hit = st.similar_cache.get(key)
                if hit is not None:
                    st.similar_cache.move_to_end(key)
                    return hit
        others = [st.row[e] for e in exclude if e in st.row]
        if category is None and (not available_only or st.all_available):
            allow = None  # no mask to build and check: the common item-page call
        else:
            allow = self._allowed(st, category, (), available_only)
        ids, scores = st.similar_index.neighbours_of(r, k, allow=allow, exclude=others)
        items = [
            self._item(st, int(i), float(s), [{"type": "similar_to", "item": item_id}])
            for i, s in zip(np.asarray(ids).ravel(), np.asarray(scores).ravel()) if int(i) >= 0
        ]
        ranked = Ranked(items)
        if size:
            with self._lock:
                st.similar_cache[key] = ranked
                while len(st.similar_cache) > size:
                    st.similar_cache.popitem(last=False)
        return ranked

    # ------------------------------------------------------------------ home feed
    def _user_events(self, st: _State, user_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The user's events on servable items with a positive type weight: ``(rows, ts, weights)``."""
        from recsys.store.models import User

        types = self.config.event_types
        with self.engine.connect() as conn:
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

    def _user_signals(self, st: _State, user_id: str) -> tuple[UserSignals, np.ndarray]:
        """Fallback features (no feed model): the user's items newest first with recency weights."""
        rows, _ts, w = self._user_events(st, user_id)
        rows, w = rows[::-1], w[::-1]
        hist, weights = [], []
        distinct: set[int] = set()
        for r, wi in zip(rows, w):
            distinct.add(int(r))  # recency by how many distinct items came since (newest first)
            hist.append(int(r))
            weights.append(float(wi) * (1.0 + 2.0 * np.exp(-len(distinct) / 10.0)))
        seen = np.unique(np.asarray(hist, dtype=np.int64))
        return UserSignals(np.asarray(hist, dtype=np.int64), np.asarray(weights, dtype=np.float32), None), seen

    def user_history(self, user_id: str) -> Any:
        """The user's :class:`~recsys.cf.history.History` row as the feed model sees it (``None`` without one)."""
        from recsys.recommend.ranker import user_history

        st = self._st()
        if st.feed is None:
            return None
        rows, ts, w = self._user_events(st, user_id)
        return user_history([rows], [ts], [w / np.float32(st.feed.model.weight_scale)], st.feed.tie_rank, len(st.ids))

    def _neighbours(self, st: _State) -> Any:
        def near(rows: np.ndarray, n: int) -> np.ndarray:
            ids, _ = st.similar_index.search(st.similar_vectors[rows], n + 1)
            ids = np.asarray(ids).ravel()
            return ids[ids >= 0]

        return near

    def recommend(self, user_id: str, *, k: int, exclude_seen: bool = True, category: str | None = None,
                  exclude: Sequence[str] = (), diversity: float = 0.0, max_per_category: int | None = None,
                  cursor: str | None = None) -> Feed:
        st = self._st()
        served = decode_cursor(cursor, user_id, self._secret) if cursor else []
        allowed = self._allowed(st, category, exclude, True)
        if served:
            s_rows = np.asarray(served, dtype=np.int64)
            allowed[s_rows[(s_rows >= 0) & (s_rows < len(allowed))]] = False
        if st.feed is None:
            return self._fallback_feed(st, user_id, k, allowed, exclude_seen, diversity, max_per_category, served)
        history = self.user_history(user_id)
        cold = history.items.shape[0] == 0
        pooled = diversity > 0 or bool(max_per_category)
        ranking = st.feed.rank(history, k, allowed, exclude_seen=exclude_seen, pool=FEED_POOL if pooled else None,
                               neighbours=self._neighbours(st))
        valid = ranking.rows[0] >= 0
        rows = ranking.rows[0][valid]
        scores = ranking.scores[0][valid]
        pick = reshape_pool(rows, scores, k, vectors=st.content, categories=st.categories, diversity=diversity,
                            max_per_category=max_per_category)
        p = st.feed.model.params
        history_items = history.items
        items = []
        for j in pick:
            r = int(rows[j])
            reasons = [{"type": "popular"}] if cold else self._reasons(
                st, r, float(ranking.cf[0][valid][j]), float(ranking.content[0][valid][j]),
                float(ranking.pop[0][valid][j]), p, history_items)
            items.append(self._item(st, r, float(scores[j]), reasons))
        exclude_n = len(history_items) if exclude_seen else 0
        more = int(allowed.sum()) - exclude_n > len(items)
        nxt = encode_cursor(user_id, [*served, *[st.row[i.id] for i in items]], self._secret) if more and items else None
        return Feed(items, cold_start=cold, next_cursor=nxt)

    def _reasons(self, st: _State, r: int, cf: float, content: float, pop: float, p: Any,
                 history_items: np.ndarray) -> list[dict[str, Any]]:
        """Up to two reasons: the components that lifted the item most (weighted, standardised)."""
        warm = bool(st.feed.components.warm[r])
        w = p.warm if warm else p.cold
        parts = {"collaborative": w.cf * cf, "similar_to": w.content * content, "popular": w.pop * pop}
        out: list[dict[str, Any]] = []
        for name, value in sorted(parts.items(), key=lambda kv: -kv[1]):
            if value <= 0 or len(out) == 2:
                continue
            if name == "similar_to":
                if not len(history_items):
                    continue
                sims = st.content[history_items] @ st.content[r]
                out.append({"type": "similar_to", "item": st.ids[int(history_items[int(np.argmax(sims))])]})
            else:
                out.append({"type": name})
        if not warm:
            out.append({"type": "new_item"})
        return out or [{"type": "popular"}]

    def _fallback_feed(self, st: _State, user_id: str, k: int, allowed: np.ndarray, exclude_seen: bool,
                       diversity: float, max_per_category: int | None, served: list[int]) -> Feed:
        """No trained feed model: content similarity to the user's items plus popularity."""
        signals, seen = self._user_signals(st, user_id)
        cold = len(signals.history) == 0
        feats = user_features(signals, st.item_factors, st.content, st.popularity_z, st.freshness, st.categories)
        weights = FeedWeights(cf=0, content=0, popularity=1.0) if cold else self.weights
        scores = blend(feats, weights)
        if exclude_seen and len(seen):
            allowed[seen] = False
        rows = select_rows(scores, allowed, k, vectors=st.content, diversity=diversity, categories=st.categories,
                           max_per_category=max_per_category)
        items = [
            self._item(st, int(r), float(scores[r]), [{"type": "popular"}] if cold else reasons_for(int(r), feats, weights, st.ids))
            for r in rows
        ]
        more = int(allowed.sum()) > len(rows)
        nxt = encode_cursor(user_id, [*served, *[int(r) for r in rows]], self._secret) if more and len(rows) else None
        return Feed(items, cold_start=cold, next_cursor=nxt)

    # ------------------------------------------------------------------ search
    def search(self, *, text: str | None, image: Any, user_id: str | None, k: int, category: str | None = None,
               available_only: bool = True, price_min: float | None = None, price_max: float | None = None,
               text_weight: float = 0.5, mode: str | None = None, attributes: dict[str, Any] | None = None,
               facets: Sequence[str] = (), exclude: Sequence[str] = ()) -> Ranked:
        """Rank with :func:`recsys.search.hybrid.run_search` (what ``recsys search`` runs), the user's feed
        score as the personal signal. Returns a :class:`~recsys.search.serving.SearchRanked`."""
        from recsys.search.hybrid import SearchRequest
        from recsys.search.serving import ranked_search

        st = self._st()
        if image is not None and st.search.encode_image is None:
            raise UnsupportedQueryError(
                "image queries need a trained text-image alignment, and none is active; run `recsys train-align`"
            )
        request = SearchRequest(text, image, k, mode, (category,) if category is not None else None,
                                attributes or {}, price_min, price_max, available_only, tuple(exclude), tuple(facets),
                                text_weight)
        personal = self._personal_scores(st, user_id) if user_id is not None else None
        return ranked_search(st.search, request, self.config.search, personal,
                             lambda r, score, reasons: self._item(st, r, score, reasons), st.prices)

    def _personal_scores(self, st: _State, user_id: str) -> np.ndarray | None:
        """``(n,)`` standardised feed scores of the user (``None``: no history)."""
        if st.feed is not None and st.feed.exact:
            history = self.user_history(user_id)
            return zscore(st.feed.scores(history)[0]) if history.items.shape[0] else None
        signals, _ = self._user_signals(st, user_id)
        if len(signals.history):
            feats = user_features(signals, st.item_factors, st.content, st.popularity_z, st.freshness, st.categories)
            return blend(feats, self.weights)
        return None

    @staticmethod
    def _price_mask(st: _State, lo: float | None, hi: float | None) -> np.ndarray:
        p = st.prices
        ok = ~np.isnan(p)
        if lo is not None:
            ok &= p >= lo
        if hi is not None:
            ok &= p <= hi
        return ok

    # ------------------------------------------------------------------ writes
    def record_events(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        from recsys.config import EventMapping
        from recsys.ingest import append_event_records

        now = int(time.time())
        rows = [{**r, "timestamp": r.get("timestamp") if r.get("timestamp") is not None else now} for r in records]
        mapping = EventMapping(event_type="event_type", value="value", event_id="event_id")
        if not any(r.get("event_id") for r in rows):
            mapping = mapping.model_copy(update={"event_id": None})
        res = append_event_records(self.engine, rows, mapping, self.config.event_types)
        return {
            "inserted": res.inserted,
            "duplicates": res.duplicates,
            "rejected": [{"index": i, "field": f, "reason": reason} for i, f, reason in res.errors],
        }

    def upsert_items(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Store the items, embed the new or changed ones at once, and make them servable.

        Every serving process reloads (this one at once, the others when they see the new catalogue stamp);
        the indexes take the new rows into their side buffers instead of being rebuilt (``index.max_buffered``).
        The answer waits for this process's reload up to ``service.upsert_wait_s``: ``servable`` says
        whether it finished (else it goes on in the background and the items are served when it ends).
        """
        from recsys.embed import run_embed
        from recsys.ingest.items import upsert_item_records
        from recsys.store.artifacts import register_artifact

        report, changed = upsert_item_records(self.engine, items)
        embedded = 0
        servable = True
        if changed:
            with_image = {it["id"] for it in items if it.get("image")} & set(changed)
            rep = run_embed(
                self.engine, self.config.encoders, text_encoder=self._text_encoder_obj(),
                image_encoder=self._image_encoder_obj() if with_image else None,
            )
            embedded = sum(sp.embedded for sp in rep.spaces)
            register_artifact(self.engine, CATALOGUE, "api", None,
                              metrics={"stamp": uuid.uuid4().hex, "changed_items": len(changed)})
            servable = self.wait_reload(self.request_reload(), self.config.service.upsert_wait_s)
        return {"inserted": report.inserted, "updated": report.updated, "unchanged": report.unchanged,
                "embedded": embedded, "servable": servable}

    def _image_encoder_obj(self) -> Any:
        if self._image_encoder is None:
            from recsys.encoders.factory import build_image_encoder

            self._image_encoder = build_image_encoder(self.config.encoders.image, self.config.encoders.device)
        return self._image_encoder
