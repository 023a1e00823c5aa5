"""The models compared by ``recsys evaluate``: popularity, ALS only, content only, and the hybrid.

Each one is fitted on a :class:`TrainData` (the split's training history and the item content) and
scores users as ``(n_users, n_items)`` arrays; the runner does the ranking and the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from recsys.cf.history import History
from recsys.cf.matrix import apply_confidence, bm25_stats
from recsys.cf.model import fit_factors
from recsys.cf.settings import CFConfig
from recsys.ranking.scoring import content_profiles
from recsys.recommend.hybrid import HybridRecommender

__all__ = ["ALSOnly", "ContentOnly", "EvalModel", "HybridModel", "Popularity", "TrainData", "default_models"]


@dataclass(frozen=True)
class TrainData:
    """What a model may see: the training history and every item's content.

    Attributes:
        history: distinct training (user, item) pairs with recency ranks (weight 1 each).
        content: ``(n_items, d)`` float32 L2-normalised item vectors, or ``None``.
        blocks: the content's parts (e.g. text, image), each L2-normalised; the hybrid weighs them
            itself. ``None``: ``content`` is the only block.
    """

    history: History
    content: np.ndarray | None
    blocks: tuple[np.ndarray, ...] | None = None


class EvalModel(Protocol):
    name: str

    def fit(self, data: TrainData) -> None: ...

    def score(self, users: np.ndarray) -> np.ndarray:
        """``(len(users), n_items)`` float scores, higher is better."""
        ...


@dataclass
class Popularity:
    """Items ranked by how many training users touched them."""

    name: str = "popularity"
    counts: np.ndarray | None = None

    def fit(self, data: TrainData) -> None:
        self.counts = data.history.item_counts()

    def score(self, users: np.ndarray) -> np.ndarray:
        if self.counts is None:
            raise RuntimeError("fit first")
        return np.broadcast_to(self.counts.astype(np.float32), (len(users), self.counts.shape[0]))


@dataclass
class ALSOnly:
    """Plain implicit ALS (``cf`` defaults) on the binary training matrix; trained user factors."""

    cfg: CFConfig
    name: str = "ALS only"
    user_factors: np.ndarray | None = None
    item_factors: np.ndarray | None = None

    def fit(self, data: TrainData) -> None:
        weights = data.history.matrix()
        stats = bm25_stats(weights) if self.cfg.confidence == "bm25" else None
        cfg = self.cfg.model_copy(update={"model": "als"})
        self.user_factors, self.item_factors = fit_factors(apply_confidence(weights, cfg, stats), cfg)

    def score(self, users: np.ndarray) -> np.ndarray:
        if self.user_factors is None or self.item_factors is None:
            raise RuntimeError("fit first")
        return self.user_factors[users] @ self.item_factors.T


@dataclass
class ContentOnly:
    """Cosine between the mean of the user's items' content vectors and every item (content kNN)."""

    name: str = "content only"
    history: History | None = None
    content: np.ndarray | None = None

    def fit(self, data: TrainData) -> None:
        if data.content is None:
            raise ValueError("the content-only model needs item content")
        self.history, self.content = data.history, data.content

    def score(self, users: np.ndarray) -> np.ndarray:
        if self.history is None or self.content is None:
            raise RuntimeError("fit first")
        rows = self.history.select(users)
        prof = content_profiles(rows.matrix(np.ones_like(rows.weight)), self.content)
        return prof @ self.content.T


@dataclass
class HybridModel:
    """The project's hybrid (:class:`recsys.recommend.hybrid.HybridRecommender`), settings chosen at fit time."""

    cfg: CFConfig
    name: str = "hybrid"
    model: HybridRecommender | None = None
    details: dict[str, Any] = field(default_factory=dict)
    budget_s: float = 240.0
    """The CF tuning's budget (``train.budget_s``)."""

    def fit(self, data: TrainData) -> None:
        content = data.blocks if data.blocks is not None else data.content
        self.model = HybridRecommender(self.cfg, budget_s=self.budget_s).fit(data.history, content)
        self.details = dict(self.model.selection)

    def score(self, users: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("fit first")
        return self.model.score(users)

    def release(self) -> None:
        """Forget the fit once the row is measured (the details stay)."""
        self.model = None


def default_models(cfg: CFConfig, with_content: bool, budget_s: float = 240.0) -> list[EvalModel]:
    """The four rows of the table (content-only is left out when there is no content); ``recsys evaluate``
    adds "hybrid + reranker" (:mod:`recsys.evaluation.reranked`) after them."""
    models: list[EvalModel] = [Popularity(), ALSOnly(cfg)]
    if with_content:
        models.append(ContentOnly())
    models.append(HybridModel(cfg, budget_s=budget_s))
    return models
