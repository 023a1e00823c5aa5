"""Run models on a protocol's split and collect one result row per model."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.cf.history import History
from recsys.evaluation.models import EvalModel, TrainData
from recsys.evaluation.protocols import Split
from recsys.ranking.metrics import catalogue_coverage, ndcg_at_k, rank_top_k, recall_at_k
from recsys.ranking.topk import tie_order

log = logging.getLogger(__name__)

__all__ = ["EvalReport", "ResultRow", "evaluate_model", "run_models", "train_data"]


@dataclass(frozen=True)
class ResultRow:
    """One model's figures on one split.

    Attributes:
        seconds: wall time of fitting plus scoring and ranking every test user.
    """

    model: str
    ndcg: float
    recall: float
    coverage: float
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalReport:
    dataset: str
    protocol: str
    k: int
    n_test_users: int
    n_candidates: int
    rows: list[ResultRow]

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "protocol": self.protocol,
            "k": self.k,
            "test_users": self.n_test_users,
            "candidates": self.n_candidates,
            "rows": [
                {
                    "model": r.model,
                    f"ndcg@{self.k}": round(r.ndcg, 4),
                    f"recall@{self.k}": round(r.recall, 4),
                    f"coverage@{self.k}": round(r.coverage, 4),
                    "seconds": round(r.seconds, 2),
                    **({"details": r.details} if r.details else {}),
                }
                for r in self.rows
            ],
        }


def train_data(split: Split, content: np.ndarray | None, blocks: tuple[np.ndarray, ...] | None = None) -> TrainData:
    """The split's training events as a history (each pair once, weight 1) plus the item content."""
    history = History.from_events(split.train.user, split.train.item, split.n_users, split.n_items)
    return TrainData(history, content, blocks)


def evaluate_model(model: EvalModel, split: Split, data: TrainData, k: int = 10, batch: int = 1024) -> ResultRow:
    """Fit ``model`` on ``data``, rank for every test user as the protocol says, and score the top ``k``.

    Equal scores are ordered by :func:`tie_order`, not by catalogue position.
    """
    ties = tie_order(split.n_items)
    t0 = time.perf_counter()
    model.fit(data)
    seen = data.history.matrix() if split.exclude_train else None
    ranked_parts = []
    for start in range(0, split.test_users.shape[0], batch):
        users = split.test_users[start : start + batch]
        scores = model.score(users)
        if split.candidates is not None:
            cand = split.candidates
            ranked_parts.append(cand[rank_top_k(scores[:, cand], k, tie_order=ties[cand])])
        else:
            ranked_parts.append(rank_top_k(scores, k, seen[users] if seen is not None else None, tie_order=ties))
    ranked = np.concatenate(ranked_parts) if ranked_parts else np.zeros((0, k), dtype=np.int64)
    seconds = time.perf_counter() - t0
    n_catalogue = split.n_items if split.candidates is None else int(split.candidates.shape[0])
    row = ResultRow(
        model=model.name,
        ndcg=float(ndcg_at_k(ranked, split.test_items, k).mean()) if len(ranked) else 0.0,
        recall=float(recall_at_k(ranked, split.test_items, k).mean()) if len(ranked) else 0.0,
        coverage=catalogue_coverage(ranked, n_catalogue, k),
        seconds=seconds,
        details=dict(getattr(model, "details", {}) or {}),
    )
    log.info(
        "%s: ndcg@%d %.4f recall %.4f coverage %.3f (%.1fs)", row.model, k, row.ndcg, row.recall, row.coverage, seconds
    )
    return row


def run_models(
    models: Sequence[EvalModel],
    split: Split,
    content: np.ndarray | None,
    dataset: str,
    k: int = 10,
    blocks: tuple[np.ndarray, ...] | None = None,
) -> EvalReport:
    """Evaluate every model on one split (``blocks``: the content's parts, for the hybrid)."""
    data = train_data(split, content, blocks)
    rows = [evaluate_model(m, split, data, k) for m in models]
    return EvalReport(
        dataset=dataset,
        protocol=split.protocol,
        k=k,
        n_test_users=int(split.test_users.shape[0]),
        n_candidates=split.n_items if split.candidates is None else int(split.candidates.shape[0]),
        rows=rows,
    )
