"""The service's runtime: a thin façade over the serving modules, one per role.

:class:`Runtime` holds one loaded snapshot (:mod:`recsys.serving.state`) and swaps it whole: a full load
(:mod:`recsys.serving.reload`: the catalogue's content vectors, fused through the active alignment when
there is one, the active feed model, popularity from the events table and the indexes of
:mod:`recsys.serving.indexes`), or an incremental update of the items changed since
(:mod:`recsys.serving.updates`). A newer active feed, alignment or index artifact in the registry, or items
put through another process (the catalogue stamp), are noticed by ``refresh_if_changed`` (checked at most
every few seconds) and loaded by a background thread while the current state goes on serving; builds are
serialised.

The answers: similar items (:mod:`recsys.serving.similar`), the home feed (:mod:`recsys.serving.feed`),
search (:mod:`recsys.serving.search`), event batches and item upserts (:mod:`recsys.serving.writes`).
Each is a function of the snapshot and its collaborators; the methods here wire them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import Engine, select

from recsys.config import Config
from recsys.errors import ArtifactError, RecsysError
from recsys.ranking.rerank import FeedWeights
from recsys.search.serving import rebuild_lexical
from recsys.serving import feed, reload, similar, updates, writes
from recsys.serving import search as search_service
from recsys.serving.cursor_secret import cursor_secret
from recsys.serving.indexes import published_index, search_index, similar_fingerprint
from recsys.serving.item_writes import ItemWrites, catalogue_stamper
from recsys.serving.reload import Reloader
from recsys.serving.results import Feed, Ranked
from recsys.serving.state import CATALOGUE, SIMILAR_INDEX, ServingState, allowed_mask
from recsys.store.outage import OutageLog

log = logging.getLogger(__name__)


class Runtime:
    """Loaded models and indexes, plus the service functions. Thread-safe for reads."""

    def __init__(self, config: Config, engine: Engine, *, text_encoder: Any = None, image_encoder: Any = None) -> None:
        """``text_encoder`` / ``image_encoder``: default built from ``config.encoders`` when first needed."""
        self.config = config
        self.engine = engine
        self._image_encoder = image_encoder
        self.weights = FeedWeights()
        self._lock = threading.Lock()
        self._state: ServingState | None = None
        self._load_error: str | None = None
        self._checked = 0.0
        self._reload_lock = threading.Lock()  # one build at a time; a later one always starts after an earlier
        self._reloader = Reloader(self.update)
        self._secret = cursor_secret(config)  # from config, else made once in the data dir; never derived
        self.outages = OutageLog(log, config.service.outage_log_interval_s)
        self._text_encoder: Any = text_encoder
        self._writes = ItemWrites(config, engine, text_encoder=self._text_encoder_obj, image_encoder=self._image_encoder_obj,
                                  request_reload=self.request_reload, wait_reload=self.wait_reload,
                                  catalogue_stamp=catalogue_stamper(engine, CATALOGUE))

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
                image = self._image_encoder if self._image_encoder is not None else self._image_encoder_obj
                state = reload.build_state(self.config, self.engine, text_encoder=self._text_encoder_obj(),
                                           image_encoder=image)
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
        the items changed since the state was read are upserted into it (:func:`recsys.serving.updates.extend_state`:
        seconds at a million items); otherwise, or when that fails or the change is too large, everything is
        loaded anew."""
        with self._reload_lock:
            st = self._state
            new = None
            if st is not None:
                try:
                    if reload.changes(self.engine, st) <= {"catalogue"}:
                        new = updates.extend_state(self.config, self.engine, st)
                except Exception:  # noqa: BLE001 - fall back to a full reload
                    log.exception("incremental update failed; reloading everything")
                    new = None
            if new is not None:
                with self._lock:
                    self._state = new
                log.info("runtime updated: %d items (%d new)", len(new.ids), len(new.ids) - len(st.ids))
                return
        self.reload()

    def request_reload(self) -> int:
        """Reload in a background thread while the current state goes on serving; returns a ticket for
        :meth:`wait_reload`. Requests made while a reload runs are served by one more reload after it."""
        return self._reloader.request()

    def wait_reload(self, ticket: int, timeout: float | None = None) -> bool:
        """Wait until a reload that started after ``ticket`` was requested has finished; False on timeout."""
        return self._reloader.wait(ticket, timeout)

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
            changed = reload.changes(self.engine, self._state)
        except Exception:  # noqa: BLE001 - the database being down is reported by readiness, not here
            return False
        if changed:
            ticket = self.request_reload()
            if wait:
                self.wait_reload(ticket)
            return True
        return False

    def rebuild_index(self) -> str:
        """Build the similar-items index anew from the loaded vectors and publish it as the active version.

        Serving processes pick it up at their next ``refresh_if_changed``. Returns the new version.
        """
        st = self._st()
        _, version = published_index(self.config, self.engine, SIMILAR_INDEX, st.similar_vectors,
                                     similar_fingerprint(self.config, st.similar_vectors), force=True,
                                     table=self.config.service.similar_table_k)
        rebuild_lexical(self.engine, self.config, st.search)  # the lexical index too (side buffer folded in)
        if st.search.dense_index is not None:  # and product search's dense index
            search_index(self.config, self.engine, st.search.catalogue.vectors, force=True)
        self.reload()
        return version

    def _st(self) -> ServingState:
        st = self._state
        if st is None:
            raise ArtifactError(f"the service is not ready: {self._load_error or 'nothing loaded'}")
        return st

    def _text_encoder_obj(self) -> Any:
        if self._text_encoder is None:
            from recsys.encoders.factory import build_text_encoder

            self._text_encoder = build_text_encoder(self.config.encoders.text, self.config.encoders.device)
        return self._text_encoder

    def _image_encoder_obj(self) -> Any:
        if self._image_encoder is None:
            from recsys.encoders.factory import build_image_encoder

            self._image_encoder = build_image_encoder(self.config.encoders.image, self.config.encoders.device)
        return self._image_encoder

    # ------------------------------------------------------------------ fork (gunicorn's preloaded app)
    def before_fork(self) -> None:
        """In the process that loaded the state, before it forks serving processes from it: close its database
        connections (a child must never use its parent's), so that the children start with an empty pool."""
        self.engine.dispose()

    def after_fork(self) -> None:
        """In a process forked from the one that loaded the state (which keeps serving nothing): drop the
        inherited database pool without closing its connections (the parent's), make the locks and the
        background reloader anew (threads do not survive a fork), and check the registry at the next request,
        so that a process forked after a publish loads it. The loaded state itself is shared with the parent
        copy-on-write until a reload replaces it."""
        self.engine.dispose(close=False)
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._reloader = Reloader(self.update)
        self._checked = 0.0

    # ------------------------------------------------------------------ status
    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """``(ready, checks)``; ``checks["pid"]`` is this process's id and ``checks["database_pid"]`` that of the
        process that opened the database connection the check used (the same, unless a pool is shared)."""
        checks: dict[str, Any] = {"pid": os.getpid()}
        try:
            with self.engine.connect() as conn:
                conn.execute(select(1))
                checks["database_pid"] = conn.connection.info.get("pid")
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

    # ------------------------------------------------------------------ answers
    @staticmethod
    def _allowed(st: ServingState, category: str | None, exclude: Sequence[str], available_only: bool) -> np.ndarray:
        return allowed_mask(st, category, exclude, available_only)

    def similar_items(self, item_id: str, *, k: int, category: str | None = None, exclude: Sequence[str] = (),
                      available_only: bool = True) -> Ranked:
        return similar.similar_items(self._st(), self.config, self._lock, item_id, k=k, category=category,
                                     exclude=exclude, available_only=available_only)

    def user_history(self, user_id: str, ranker: Any = None) -> Any:
        """The user's :class:`~recsys.cf.history.History` row as the feed model (``ranker``'s, default the
        active one) sees it (``None`` without one)."""
        return feed.history_of(self.engine, self.config, self._st(), user_id, ranker=ranker)

    def recommend(self, user_id: str, *, k: int, exclude_seen: bool = True, category: str | None = None,
                  exclude: Sequence[str] = (), diversity: float = 0.0, max_per_category: int | None = None,
                  cursor: str | None = None, ranker: Any = None) -> Feed:
        """``ranker``: a feed ranker other than the active model's (an experiment variant's)."""
        return feed.recommend(self._st(), self.engine, self.config, self._secret, self.weights, user_id, k=k,
                              exclude_seen=exclude_seen, category=category, exclude=exclude, diversity=diversity,
                              max_per_category=max_per_category, cursor=cursor, outages=self.outages, ranker=ranker)

    def search(self, *, text: str | None, image: Any, user_id: str | None, k: int, category: str | None = None,
               available_only: bool = True, price_min: float | None = None, price_max: float | None = None,
               text_weight: float = 0.5, mode: str | None = None, attributes: dict[str, Any] | None = None,
               facets: Sequence[str] = (), exclude: Sequence[str] = ()) -> Ranked:
        return search_service.search(self._st(), self.engine, self.config, self.weights, text=text, image=image,
                                     user_id=user_id, k=k, category=category, available_only=available_only,
                                     price_min=price_min, price_max=price_max, text_weight=text_weight, mode=mode,
                                     attributes=attributes, facets=facets, exclude=exclude, outages=self.outages)

    # ------------------------------------------------------------------ writes
    def record_events(self, records: list[dict[str, Any]], idempotency_key: str | None = None) -> dict[str, Any]:
        """Append a batch of events. With ``idempotency_key`` a retry of the batch gets the first outcome back
        (``"replayed": true``) and writes nothing (:mod:`recsys.serving.retries`)."""
        return writes.record_events(self.engine, self.config, records, idempotency_key)

    def upsert_items(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Store the items, embed the new or changed ones in the background, and make them servable.

        Every serving process reloads (this one at once, the others when they see the new catalogue stamp);
        the indexes take the new rows into their side buffers instead of being rebuilt (``index.max_buffered``).
        The answer waits for the embedding and this process's reload up to ``service.upsert_wait_s`` in
        all: ``servable`` says whether they finished (else they go on in the background). Image references
        are checked first (:class:`~recsys.errors.ImageAccessError`); see :mod:`recsys.serving.item_writes`.
        """
        return self._writes.upsert(items)
