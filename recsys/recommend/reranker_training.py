"""Training data and training of the learned reranker (``recsys train-reranker``).

Two sources of labels, both over the hybrid's pool of ``POOL`` candidates per user
(:func:`recsys.ranking.learned.pool_features`, the function the service uses):

- **impressions** (once the service has logged lists and attributed clicks): per user, the active feed
  model's pool over their current history; label 1 for items clicked in the later half of the user's
  logged feed lists, 0 for items shown there and not clicked; items never shown are left out; the skipped
  features come from the earlier half. Users need a positive and a negative.
- **events alone** (a fresh install): each user's last ``val_share`` of distinct items (by time) become
  positives; the hybrid is refitted on the rest with the active model's blend settings (so the features
  never saw the positives) and ranks the pool; pool items the user did not touch are the negatives.

Impression labels carry the position the item was shown at (the ``shown_position`` feature, 0 at serving):
a shown item that was not clicked at position 9 says less than one not clicked at position 0.

Queries are split 80/20 by user for early stopping on NDCG@10 and for choosing the serving depth and blend
(:func:`fit_and_choose`); never on a test split.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Engine, select

from recsys.cf.history import History
from recsys.errors import RecsysError
from recsys.ranking.learned import (
    FEATURES,
    KIND,
    POOL,
    SHOWN_POSITION,
    ItemSide,
    LearnedReranker,
    choose_depth_blend,
    fill_skipped,
    fit_lambdarank,
    pool_features,
)
from recsys.ranking.ranker import FeedRanker
from recsys.recommend.model import (
    FeedModel,
    StoreHistory,
    fit_feed_model,
    load_feed_model,
    read_store_history,
)

log = logging.getLogger(__name__)


@dataclass
class RankData:
    """``X`` ``(n, F)``, labels ``y`` ``(n,)``, query sizes ``groups`` ``(q,)``; ``labelled`` ``(n,)`` bool
    (``None``: every row): rows without a label of their own (pool items never shown) carry label 0 for
    the held-out choice of depth and blend and are left out of training."""

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    labelled: np.ndarray | None = None

    def only_labelled(self) -> RankData:
        if self.labelled is None:
            return self
        starts = np.concatenate([[0], np.cumsum(self.groups)])
        sizes = np.array([int(self.labelled[a:b].sum()) for a, b in zip(starts[:-1], starts[1:])])
        return RankData(self.X[self.labelled], self.y[self.labelled], sizes)

    def split(self, share: float, seed: int) -> tuple[RankData, RankData]:
        starts = np.concatenate([[0], np.cumsum(self.groups)])
        q = len(self.groups)
        rng = np.random.default_rng(seed)
        held = np.zeros(q, dtype=bool)
        held[rng.choice(q, size=max(1, int(share * q)), replace=False)] = True
        parts = []
        for mask in (~held, held):
            idx = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in np.flatnonzero(mask)])
            parts.append(RankData(self.X[idx], self.y[idx], self.groups[mask],
                                  None if self.labelled is None else self.labelled[idx]))
        return parts[0], parts[1]


def item_side_from_store(engine: Engine, item_ids: np.ndarray, history: History) -> ItemSide:
    """Per catalogue row (``item_ids`` order): freshness, price, category code, popular-top flag."""
    from recsys.ranking.learned import popular_top_of
    from recsys.store.models import Item

    with engine.connect() as conn:
        rows = {r.external_id: r for r in conn.execute(select(Item.external_id, Item.category, Item.price, Item.created_at))}
    now = dt.datetime.now(dt.UTC).timestamp()
    cats = sorted({r.category for r in rows.values() if r.category is not None})
    code = {c: i for i, c in enumerate(cats)}
    n = len(item_ids)
    fresh, price, codes = np.empty(n, np.float32), np.full(n, np.nan), np.full(n, -1, np.int32)
    for i, e in enumerate(item_ids):
        r = rows.get(str(e))
        created = r.created_at if r is not None else None
        if created is not None and created.tzinfo is None:
            created = created.replace(tzinfo=dt.UTC)
        age = (now - created.timestamp()) / 86400 if created is not None else 365.0
        fresh[i] = np.exp(-max(age, 0.0) / 30.0)
        if r is not None:
            price[i] = np.nan if r.price is None else float(r.price)
            codes[i] = code.get(r.category, -1) if r.category is not None else -1
    return ItemSide(fresh, price, codes, popular_top_of(np.log1p(history.item_counts())))


def split_history(h: History, share: float) -> tuple[History, list[np.ndarray]]:
    """Per user, the last ``share`` of items by time (at least one, users with 2+) as the future."""
    keep = np.ones(h.items.shape[0], dtype=bool)
    future: list[np.ndarray] = []
    for u in range(h.n_users):
        a, b = int(h.indptr[u]), int(h.indptr[u + 1])
        n = b - a
        if n < 2:
            future.append(np.zeros(0, np.int64))
            continue
        m = max(1, int(round(share * n)))
        last = a + np.argsort(h.rank[a:b], kind="stable")[:m]  # rank 0 is the newest item
        keep[last] = False
        future.append(h.items[last].astype(np.int64))
    counts = np.array([int(keep[h.indptr[u] : h.indptr[u + 1]].sum()) for u in range(h.n_users)])
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(h.indptr.dtype)
    return History(h.n_users, h.n_items, indptr, h.items[keep], h.rank[keep], h.weight[keep]), future


def _rank_data(ranker: Any, history: History, side: ItemSide, labels: list[dict[int, float]], users: np.ndarray,
               batch: int = 256, fill: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
               keep_unlabelled: bool = False) -> RankData:
    """Features of each user's pool; rows with a label in ``labels[u]`` (others: dropped unless 0 is the
    default, or kept with label 0 and marked unlabelled with ``keep_unlabelled``).

    ``fill(u, rows, X)``: sets the log's features of user ``u``'s pool (``rows`` ``(p,)``, ``X`` ``(p, F)``)."""
    Xs, ys, groups, marks = [], [], [], []
    for start in range(0, len(users), batch):
        sel = users[start : start + batch]
        rows, X = pool_features(ranker, history.select(sel), side, POOL)
        for j, u in enumerate(sel):
            lab = labels[int(u)]
            default = lab.get(-1)
            y = np.array([lab.get(int(r), default if default is not None else np.nan) if r >= 0 else np.nan
                          for r in rows[j]], dtype=np.float64)
            ok = ~np.isnan(y)
            if ok.sum() < 2 or y[ok].max() <= 0 or y[ok].min() > 0:
                continue
            if fill is not None:
                fill(int(u), rows[j], X[j])
            keep = rows[j] >= 0 if keep_unlabelled else ok
            Xs.append(X[j][keep])
            ys.append(np.nan_to_num(y[keep], nan=0.0))
            marks.append(ok[keep])
            groups.append(int(keep.sum()))
    if not groups:
        raise RecsysError("no user has both a positive and a negative among the hybrid's candidates: nothing to learn")
    return RankData(np.concatenate(Xs), np.concatenate(ys), np.asarray(groups),
                    np.concatenate(marks) if keep_unlabelled else None)


def data_from_events(engine: Engine, config: Any, model: FeedModel, val_share: float = 0.2) -> RankData:
    sh = read_store_history(engine, dict(config.event_types))
    past, future = split_history(sh.history, val_share)
    refit = fit_feed_model(engine, config, params=model.params,
                           store_history=StoreHistory(past, sh.user_ids, sh.item_ids, int(past.items.shape[0]), sh.weight_scale))
    ranker = FeedRanker.build(refit, sh.item_ids)
    labels = [{**{int(i): 1.0 for i in f}, -1: 0.0} for f in future]
    users = np.array([u for u, f in enumerate(future) if len(f)], dtype=np.int64)
    return _rank_data(ranker, past, item_side_from_store(engine, sh.item_ids, past), labels, users)


def data_from_impressions(engine: Engine, config: Any, model: FeedModel) -> RankData:
    """Labels from each user's later half of logged feed lists (clicked: 1, shown and not clicked: 0, with
    the best position shown), the skipped features from their earlier half, as at serving, where they come
    from every list logged before the request."""
    from recsys.experiments.exposure import read_user_lists, skipped

    sh = read_store_history(engine, dict(config.event_types))
    urow = {str(u): i for i, u in enumerate(sh.user_ids)}
    irow = {str(e): i for i, e in enumerate(sh.item_ids)}
    labels: list[dict[int, float]] = [{} for _ in range(sh.history.n_users)]
    positions: list[dict[int, int]] = [{} for _ in range(sh.history.n_users)]
    before: dict[int, dict[str, tuple[int, int]]] = {}
    for user, lists in read_user_lists(engine).items():
        u = urow.get(user)
        if u is None:
            continue
        half = len(lists) // 2
        before[u] = skipped(lists[:half])
        for lst in lists[half:]:
            for pos, it in enumerate(lst.items):
                r = irow.get(it)
                if r is None:
                    continue
                labels[u][r] = max(labels[u].get(r, 0.0), 1.0 if it in lst.clicked else 0.0)
                positions[u][r] = min(positions[u].get(r, pos), pos)
    users = np.array([u for u, lab in enumerate(labels) if lab and max(lab.values()) > 0], dtype=np.int64)
    if not len(users):
        raise RecsysError("no feed list with an attributed click in the impression log")
    ranker = FeedRanker.build(model, sh.item_ids)

    def fill(u: int, rows: np.ndarray, X: np.ndarray) -> None:
        X[:, SHOWN_POSITION] = np.log1p([positions[u].get(int(r), 0) for r in rows])
        fill_skipped(X, rows, sh.item_ids, before.get(u, {}))

    return _rank_data(ranker, sh.history, item_side_from_store(engine, sh.item_ids, sh.history), labels, users,
                      fill=fill, keep_unlabelled=True)


def fit_and_choose(data: RankData, seed: int) -> tuple[Any, dict[str, Any]]:
    """LambdaRank on 80% of the queries (early stopping on the other 20%), then the serving depth and blend
    chosen on those held-out 20% (:func:`recsys.ranking.learned.choose_depth_blend`), over their whole
    pools (never-shown candidates as label 0)."""
    train, valid = data.split(0.2, seed)
    fit_on, stop_on = train.only_labelled(), valid.only_labelled()
    booster, summary = fit_lambdarank(fit_on.X, fit_on.y, fit_on.groups, seed=seed,
                                      valid=(stop_on.X, stop_on.y, stop_on.groups))
    # the choice sees the whole pool: a candidate never shown counts as not clicked (pessimistic for
    # the candidates the logs know nothing about, which the reranker would otherwise promote blindly)
    depth, blend, table = choose_depth_blend(booster, valid.X, valid.y, valid.groups)
    log.info("reranker: held-out NDCG@10 by depth/blend %s; chosen depth %d, blend %.2f", table, depth, blend)
    return booster, {**summary, "depth": depth, "blend": blend, "held_out_ndcg@10": table}


def train_reranker(engine: Engine, config: Any, *, source: str = "auto", seed: int = 0, activate: bool = True,
                   version: str | None = None) -> LearnedReranker:
    """Train, save under ``<artifacts>/reranker/<version>`` and register (kind ``reranker``)."""
    from recsys.recommend.model import new_version
    from recsys.store.artifacts import register_artifact
    from recsys.store.models import Impression

    model = load_feed_model(engine)
    if model is None:
        raise RecsysError("the reranker reorders the feed model's candidates: run `recsys train` first")
    if source == "auto":
        with engine.connect() as conn:
            source = "impressions" if conn.execute(select(Impression.request_id).limit(1)).first() else "events"
    data = data_from_impressions(engine, config, model) if source == "impressions" else data_from_events(engine, config, model)
    booster, summary = fit_and_choose(data, seed)
    version = version or new_version()
    info = {"source": source, "feed_model": model.version, "queries": len(data.groups),
            "rows": len(data.only_labelled().y), "positives": int((data.y > 0).sum()), **summary}
    rr = LearnedReranker(booster, version, info)
    path = rr.save(config.artifacts_path / KIND / version)
    register_artifact(engine, KIND, version, str(path), metrics=info, activate=activate)
    log.info("reranker %s trained from %s: %s", version, source, info)
    return rr


__all__ = ["FEATURES", "RankData", "fit_and_choose", "data_from_events", "data_from_impressions", "split_history", "train_reranker"]
