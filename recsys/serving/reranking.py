"""The learned reranker at serving time: the hybrid's pool reordered by the active ``reranker`` artifact.

:class:`RerankerSlot` holds the active version for one runtime and looks at the registry at most every
``every_s`` seconds: a newly trained and activated reranker (``recsys train-reranker``) is loaded and
swapped in without a restart, like the feed model and the indexes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from recsys.errors import ArtifactError
from recsys.experiments.exposure import read_user_lists, skipped
from recsys.ranking.learned import (
    KIND,
    POOL,
    ItemSide,
    LearnedReranker,
    fill_skipped,
    pool_features,
    popular_top_of,
)
from recsys.serving.feed import neighbours
from recsys.serving.state import allowed_mask, ranked_item

log = logging.getLogger(__name__)


class RerankerSlot:
    """The active reranker of a serving process (``None`` until one is trained)."""

    def __init__(self, engine: Any, every_s: float = 2.0) -> None:
        self.engine = engine
        self.every_s = every_s
        self._lock = threading.Lock()
        self._model: LearnedReranker | None = None
        self._checked = -1e9

    def get(self) -> LearnedReranker | None:
        now = time.monotonic()
        if now - self._checked >= self.every_s:
            with self._lock:
                if now - self._checked >= self.every_s:
                    self._checked = now
                    self._refresh()
        return self._model

    def _refresh(self) -> None:
        from recsys.store.artifacts import active_artifact

        try:
            art = active_artifact(self.engine, KIND)
        except Exception as exc:  # noqa: BLE001 - keep serving the loaded one
            log.warning("reranker: registry not readable: %s", exc)
            return
        if art is None or (self._model is not None and self._model.version == art.version):
            return
        try:
            self._model = LearnedReranker.load(art.path)
            log.info("reranker %s loaded", art.version)
        except (OSError, ValueError) as exc:
            log.warning("reranker %s not loadable, keeping %s: %s", art.version,
                        self._model.version if self._model else "none", exc)


def item_side(st: Any) -> ItemSide:
    """The per-row item features of a runtime state (cached on the state: it is swapped whole on reload)."""
    side = getattr(st, "_reranker_side", None)
    if side is None:
        side = ItemSide(st.freshness, st.prices, st.category_codes, popular_top_of(st.popularity_raw))
        st._reranker_side = side
    return side


def reranked_items(rt: Any, user_id: str, k: int, *, slot: RerankerSlot | None, exclude_seen: bool = True,
                   category: str | None = None, exclude: Sequence[str] = (), ranker: Any = None) -> list[Any]:
    """The hybrid's best ``POOL`` allowed items for the user, reordered by the active reranker
    (``ranker``: the hybrid's feed ranker, default the active model's; a variant's model or weights), with
    the user's logged feed lists for the skipped features: one read of the impression log per request."""
    model = slot.get() if slot is not None else None
    if model is None:
        raise ArtifactError("this variant needs a learned reranker and none is active; run `recsys train-reranker`")
    st = rt._st()
    fr = ranker if ranker is not None else st.feed
    if fr is None:
        raise ArtifactError("the reranker reorders the trained feed model's candidates, and none is active")
    history = rt.user_history(user_id, ranker=fr)
    allowed = allowed_mask(st, category, exclude, True)
    rows, X = pool_features(fr, history, item_side(st), max(POOL, k), allowed, exclude_seen=exclude_seen,
                            neighbours=neighbours(st))
    fill_skipped(X[0], rows[0], st.ids, skipped(_shown_lists(rt, user_id)))
    top, scores = model.rerank(rows[0], X[0], k)
    return [ranked_item(st, int(r), float(s), [{"type": "reranked"}]) for r, s in zip(top, scores, strict=True)]


SHOWN_LISTS = 200
"""The newest feed lists of a user the skipped features read per request (a bound on the read)."""


def _shown_lists(rt: Any, user_id: str) -> list[Any]:
    """The user's newest logged feed lists; none while the database is unreachable (the reranker then
    scores as for a user never shown a list, and the feed still answers)."""
    from recsys.store.outage import is_outage

    try:
        return read_user_lists(rt.engine, [user_id], latest=SHOWN_LISTS).get(user_id, [])
    except Exception as exc:
        if not is_outage(exc):
            raise
        log.warning("reranker: impression log unreachable (%s); skipped features left empty", type(exc).__name__)
        return []
