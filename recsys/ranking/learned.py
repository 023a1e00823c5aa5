"""The learned reranker: LightGBM LambdaRank over the features the feed computes per candidate.

The hybrid ranks a pool of candidates (:meth:`~recsys.ranking.ranker.FeedRanker.rank` with ``pool``);
each candidate gets the features below; the reranker orders the pool by its score. The same function
(:func:`pool_features`) builds the features at training and at serving time.

Features, per (user, candidate): the hybrid's score and rank in the pool, its standardised CF and content
components and popularity, freshness (``exp(-age / 30 days)``), category affinity (the share of the
user's history in the candidate's category), price (NaN when unknown; LightGBM routes missing values),
whether the candidate is among the 200 most popular items (the popularity source of the candidate regime),
``log(1 + history length)``, the position the item was shown at (training on impressions only; 0 at
serving), and how often and how high it was shown to the user before without a click (impressions only).

Serving reorders only the hybrid's best ``depth`` candidates, by ``blend * z(reranker) + (1 - blend) *
z(hybrid score)`` (z-scores within the list); the rest follow in the hybrid's order. ``depth`` and ``blend``
are chosen on the held-out users of the training data (:func:`choose_depth_blend`); ``blend`` 0 is the
hybrid's own order, so a reranker without signal on held-out users is not used.

Artifacts (kind ``reranker``): ``model.txt`` (LightGBM's text format) and ``manifest.json``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

KIND = "reranker"
FEATURES = ("base_score", "base_rank", "cf", "content", "popularity", "freshness", "category_affinity", "price",
            "popular_top", "history_len", "shown_position", "skipped_lists", "skipped_position")
SHOWN_POSITION = FEATURES.index("shown_position")
SKIPPED = FEATURES.index("skipped_lists")
"""``log(1 + lists)`` that showed the item to the user earlier without a click on it, and (next column)
``log(1 + best position)`` among those (NaN: never skipped); see :mod:`recsys.experiments.exposure`."""
"""``log(1 + position)`` at which the item was shown when its label was logged (impressions; 0 for labels
from events); always 0 at serving, so the model ranks every candidate as if shown first (position bias is
learned by this feature instead of the others)."""
POOL = 100
"""Candidates the reranker reorders (the hybrid's best ``POOL``)."""
DEPTHS = (10, 20, 50, POOL)
BLENDS = (0.0, 0.25, 0.5, 0.75, 1.0)
"""The grid of :func:`choose_depth_blend` (depth of the hybrid's pool reordered, weight of the reranker)."""


@dataclass(frozen=True)
class ItemSide:
    """Per catalogue row (the ranker's rows): ``freshness`` ``(n,)`` float32, ``prices`` ``(n,)`` float64
    (NaN unknown), ``category_codes`` ``(n,)`` int32 (-1 none), ``popular_top`` ``(n,)`` bool."""

    freshness: np.ndarray
    prices: np.ndarray
    category_codes: np.ndarray
    popular_top: np.ndarray


def popular_top_of(popularity: np.ndarray, n: int = 200) -> np.ndarray:
    out = np.zeros(popularity.shape[0], dtype=bool)
    out[np.argsort(-popularity, kind="stable")[:n]] = True
    return out


def pool_features(ranker: Any, history: Any, side: ItemSide, pool: int = POOL, allowed: np.ndarray | None = None,
                  *, exclude_seen: bool = True, neighbours: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The hybrid's pool and its features for a batch of users.

    Returns ``rows`` ``(n_users, pool)`` int64 (-1 pads) and ``X`` ``(n_users, pool, len(FEATURES))`` float32.
    """
    ranking = ranker.rank(history, pool, allowed, exclude_seen=exclude_seen, neighbours=neighbours)
    rows = ranking.rows
    n_users, width = rows.shape
    safe = np.maximum(rows, 0)
    X = np.full((n_users, width, len(FEATURES)), np.nan, np.float32)
    X[..., 0] = ranking.scores
    X[..., 1] = np.arange(width, dtype=np.float32)[None, :]
    X[..., 2] = ranking.cf
    X[..., 3] = ranking.content
    X[..., 4] = ranking.pop
    X[..., 5] = side.freshness[safe]
    codes = side.category_codes
    for u in range(n_users):
        mine = history.items[history.indptr[u] : history.indptr[u + 1]]
        cats = codes[mine]
        cats = cats[cats >= 0]
        if cats.size:
            share = np.bincount(cats, minlength=int(codes.max()) + 1) / cats.size
            c = codes[safe[u]]
            X[u, :, 6] = np.where(c >= 0, share[np.maximum(c, 0)], 0.0)
        else:
            X[u, :, 6] = 0.0
        X[u, :, 9] = np.log1p(mine.size)
    X[..., 7] = side.prices[safe]
    X[..., 8] = side.popular_top[safe]
    X[..., SHOWN_POSITION] = 0.0
    X[..., SKIPPED] = 0.0
    X[rows < 0] = np.nan
    return rows, X


@dataclass
class LearnedReranker:
    """A trained LambdaRank booster and what it was trained from."""

    booster: Any
    version: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def score(self, X: np.ndarray) -> np.ndarray:
        """``X`` ``(n, len(FEATURES))`` -> scores ``(n,)`` float64 (higher first)."""
        return np.asarray(self.booster.predict(X, num_threads=1), dtype=np.float64)

    @property
    def depth(self) -> int:
        return int(self.info.get("depth") or POOL)

    @property
    def blend(self) -> float:
        b = self.info.get("blend")
        return 1.0 if b is None else float(b)

    def rerank(self, rows: np.ndarray, X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """One user's pool ``rows`` ``(p,)`` (the hybrid's order, -1 pads) and features ``(p, F)`` -> the best
        ``k`` rows and their scores: the first ``depth`` valid rows in blended order, then the rest."""
        idx = np.flatnonzero(rows >= 0)
        head, tail = idx[: self.depth], idx[self.depth :]
        s = blended(self.score(X[head]) if head.size else np.zeros(0), X[head, 0].astype(np.float64), self.blend)
        order = np.concatenate([head[np.argsort(-s, kind="stable")], tail])[:k]
        tail_scores = (s.min() if s.size else 0.0) - 1.0 - np.arange(max(order.size - head.size, 0))
        return rows[order], np.concatenate([np.sort(s)[::-1], tail_scores])[: order.size]

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(str(d / "model.txt"))
        (d / "manifest.json").write_text(json.dumps({"kind": KIND, "version": self.version, "features": FEATURES,
                                                     **self.info}, indent=1, default=str))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> LearnedReranker:
        import lightgbm as lgb

        d = Path(directory)
        manifest = json.loads((d / "manifest.json").read_text())
        if tuple(manifest.get("features", ())) != FEATURES:
            raise ValueError(f"{d}: reranker trained on features {manifest.get('features')}, this code computes {FEATURES}")
        return cls(lgb.Booster(model_file=str(d / "model.txt")), manifest.get("version", ""), manifest)


def fit_lambdarank(X: np.ndarray, y: np.ndarray, groups: np.ndarray, *, seed: int = 0,
                   num_rounds: int = 200, valid: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
                   ) -> tuple[Any, dict[str, Any]]:
    """LambdaRank on ``X`` ``(n, F)``, graded labels ``y`` ``(n,)`` and query sizes ``groups``.

    With ``valid`` (the same three arrays for held-out queries) training stops early on its NDCG@10.
    Returns the booster and a summary (rounds, validation NDCG@10)."""
    import lightgbm as lgb

    params = {"objective": "lambdarank", "metric": "ndcg", "eval_at": [10], "learning_rate": 0.05,
              "num_leaves": 15, "min_data_in_leaf": 50, "feature_fraction": 0.9, "bagging_fraction": 0.8,
              "bagging_freq": 1, "lambdarank_truncation_level": 20, "seed": seed, "deterministic": True,
              "num_threads": 2, "verbose": -1}
    train = lgb.Dataset(X, y, group=groups, feature_name=list(FEATURES), free_raw_data=False)
    sets, names, callbacks = [train], ["train"], []
    if valid is not None:
        sets.append(lgb.Dataset(valid[0], valid[1], group=valid[2], reference=train))
        names.append("valid")
        callbacks.append(lgb.early_stopping(20, verbose=False))
    booster = lgb.train(params, train, num_boost_round=num_rounds, valid_sets=sets, valid_names=names,
                        callbacks=callbacks)
    best = booster.best_score.get("valid", {}).get("ndcg@10") if valid is not None else None
    return booster, {"rounds": booster.best_iteration or num_rounds, "valid_ndcg@10": best}


def _z(v: np.ndarray) -> np.ndarray:
    v = np.nan_to_num(np.asarray(v, dtype=np.float64), nan=0.0)
    sd = v.std()
    return (v - v.mean()) / sd if sd > 0 else np.zeros_like(v)


def blended(reranker: np.ndarray, base: np.ndarray, blend: float) -> np.ndarray:
    """``blend * z(reranker) + (1 - blend) * z(base)`` over one list (``(n,)`` each); with ``blend`` 0 the
    order is the base order (stable sort of equal scores keeps it)."""
    return blend * _z(reranker) + (1.0 - blend) * _z(base)


def ndcg_at(labels_in_order: np.ndarray, k: int = 10) -> float:
    """NDCG@k of one list's labels in served order (``nan`` without a positive)."""
    ideal = np.sort(labels_in_order)[::-1][:k]
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    idcg = float((ideal * disc[: ideal.size]).sum())
    if idcg <= 0:
        return float("nan")
    return float((labels_in_order[:k] * disc[: min(k, labels_in_order.size)]).sum() / idcg)


def choose_depth_blend(booster: Any, X: np.ndarray, y: np.ndarray, groups: np.ndarray, k: int = 10
                       ) -> tuple[int, float, dict[str, float]]:
    """The ``(depth, blend)`` of :data:`DEPTHS` x :data:`BLENDS` with the best mean NDCG@k on held-out
    queries (``X`` rows of each query in the hybrid's order, their ``base_rank`` feature being the pool
    rank; ``shown_position`` is set to 0 as at serving). Ties go to the smaller blend, then the smaller
    depth. Returns the choice and every cell's NDCG (``"depth/blend": ndcg``)."""
    Xs = X.copy()
    Xs[:, SHOWN_POSITION] = 0.0
    rr = np.asarray(booster.predict(Xs, num_threads=1), dtype=np.float64)
    starts = np.concatenate([[0], np.cumsum(groups)])
    table: dict[str, float] = {}
    best = (-1.0, POOL, 0.0)
    for blend in BLENDS:
        for depth in DEPTHS:
            vals = []
            for a, b in zip(starts[:-1], starts[1:]):
                rank = X[a:b, 1]
                head = np.flatnonzero(rank < depth)
                tail = np.flatnonzero(rank >= depth)
                s = blended(rr[a:b][head], X[a:b, 0][head], blend)
                order = np.concatenate([head[np.argsort(-s, kind="stable")], tail[np.argsort(rank[tail], kind="stable")]])
                vals.append(ndcg_at(y[a:b][order], k))
            score = float(np.nanmean(vals)) if np.isfinite(vals).any() else 0.0
            table[f"{depth}/{blend}"] = score
            if score > best[0] + 1e-9:
                best = (score, depth, blend)
    return best[1], best[2], table


def fill_skipped(X: np.ndarray, rows: np.ndarray, ids: Sequence[str], skipped: dict[str, tuple[int, int]]) -> None:
    """Set the skipped features of one user's pool in place: ``X`` ``(p, F)``, ``rows`` ``(p,)`` (-1 pads),
    ``ids`` the external id per catalogue row, ``skipped`` item -> (lists, best position)."""
    for j, r in enumerate(rows):
        if r < 0:
            continue
        got = skipped.get(str(ids[r]))
        if got is not None:
            X[j, SKIPPED] = np.log1p(got[0])
            X[j, SKIPPED + 1] = np.log1p(got[1])
