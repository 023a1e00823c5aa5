"""The "hybrid + reranker" row of ``recsys evaluate``: the hybrid's pool reordered by a LambdaRank model
trained inside the protocol's training events only.

At fit time each training user's latest 20% of items (by time) become validation positives; a hybrid with
the full fit's chosen settings is refitted on the rest and ranks each user's pool of ``POOL`` candidates;
the reranker learns from them (early stopping, and the serving depth and blend, on a 20% share of those
users). It then reorders the hybrid's pool for the test users. The test split is never seen while fitting. Items the evaluation knows
nothing about beyond content have no prices, categories or ages: those features are constant here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.cf.history import History
from recsys.cf.settings import CFConfig
from recsys.evaluation.models import TrainData
from recsys.ranking.learned import (
    POOL,
    ItemSide,
    LearnedReranker,
    pool_features,
    popular_top_of,
)
from recsys.recommend.hybrid import HybridRecommender


def _ranker(rec: HybridRecommender, n_items: int) -> Any:
    from recsys.ranking.ranker import FeedRanker
    from recsys.recommend.model import FeedModel

    comp = rec.components
    assert comp is not None and rec.params is not None
    model = FeedModel(item_ids=np.arange(n_items).astype(str), params=rec.params, cfg=rec.cfg, components=comp,
                      factor_map=comp.factor_map, pop_map=comp.pop_map, pop_mean=comp.pop_mean, pop_std=comp.pop_std,
                      encoders={})
    return FeedRanker.build(model, model.item_ids)


def _side(history: History) -> ItemSide:
    n = history.n_items
    return ItemSide(np.ones(n, np.float32), np.full(n, np.nan), np.full(n, -1, np.int32),
                    popular_top_of(np.log1p(history.item_counts())))


@dataclass
class HybridRerankedModel:
    cfg: CFConfig
    name: str = "hybrid + reranker"
    seed: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    _ranker: Any = None
    _history: History | None = None
    _reranker: LearnedReranker | None = None

    def fit(self, data: TrainData) -> None:
        from recsys.recommend.reranker_training import (
            RankData,
            _rank_data,
            fit_and_choose,
            split_history,
        )

        content = data.blocks if data.blocks is not None else data.content
        full = HybridRecommender(self.cfg).fit(data.history, content)
        past, future = split_history(data.history, 0.2)
        refit = HybridRecommender(self.cfg, full.params).fit(past, content)
        labels = [{**{int(i): 1.0 for i in f}, -1: 0.0} for f in future]
        users = np.array([u for u, f in enumerate(future) if len(f)], dtype=np.int64)
        rd: RankData = _rank_data(_ranker(refit, data.history.n_items), past, _side(past), labels, users)
        booster, info = fit_and_choose(rd, self.seed)
        self._reranker = LearnedReranker(booster, "eval", info)
        self._ranker = _ranker(full, data.history.n_items)
        self._history = data.history
        self.details = {"queries": len(rd.groups), **{k: v for k, v in info.items()
                                                      if v is not None and k != "held_out_ndcg@10"}}

    def score(self, users: np.ndarray) -> np.ndarray:
        """The hybrid's scores, with its pool lifted above every other item in the reranker's order."""
        if self._reranker is None or self._history is None:
            raise RuntimeError("fit first")
        rows_h = self._history.select(users)
        base = self._ranker.scores(rows_h).astype(np.float64)
        rows, X = pool_features(self._ranker, rows_h, _side(self._history), POOL)
        out = base - np.nanmax(np.abs(base)) * 4 - 10.0  # below every pool item
        for j in range(len(users)):
            top, _ = self._reranker.rerank(rows[j], X[j], POOL)
            out[j, top] = np.arange(len(top), 0, -1, dtype=np.float64)
        return out.astype(np.float32)
