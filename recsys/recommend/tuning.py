"""Per-catalogue choice of the CF component and its hyperparameters, on a validation carve of the
training events, within a time budget.

The carve is the hybrid's temporal hold-out (:func:`~recsys.cf.validation.temporal_holdout`: each user's
newest 20 % of training items), so nothing here sees a test split. Every candidate is fitted on the
carve's training part and scored alone (plain history rows, no recency, no content) by validation
NDCG@10 on up to ``cf.tuning.max_validation_users`` users.

The search is a greedy coordinate ascent per family, started at the configured settings: ALS
(factors, then regularisation, then alpha), item-kNN (neighbours, then shrinkage) and EASE (lambda).
Families are interleaved cheapest first (one step of each per round), and a step is skipped when the
time already spent plus what the family's last fit took would pass ``budget_s``. The best candidate
overall becomes ``cf.component``; the best ALS settings are kept for the item factors either way (cold
items, similar items and candidate retrieval use them). A grid this small was measured to be enough
(see README, "Tuning"): a sampler such as Optuna pays off only when each trial is cheap next to the
budget, and here one EASE trial costs a good part of it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.cf.history import History
from recsys.cf.itemitem import ItemItem, fit_item_item
from recsys.cf.matrix import apply_confidence, bm25_stats
from recsys.cf.model import fit_factors, fold_in
from recsys.cf.settings import CFConfig
from recsys.cf.validation import ValidationSplit, temporal_holdout
from recsys.recommend.selection import batched_ndcg

log = logging.getLogger(__name__)

__all__ = ["Prefit", "TuningResult", "tune_cf"]


@dataclass(frozen=True)
class Prefit:
    """The winner's fit on the carve's training part (reused by the blend selection on the same carve).

    Attributes:
        item_factors: ``(n_items, k)`` float32 ALS factors of the best ALS settings.
        item_item: the winning item-item component (``None`` when ALS won).
    """

    item_factors: np.ndarray
    item_item: ItemItem | None


@dataclass
class TuningResult:
    """The chosen ``cf`` section, the report for the manifest, and the reusable fit."""

    cfg: CFConfig
    report: dict[str, Any] = field(default_factory=dict)
    prefit: Prefit | None = None


_ALS_KEYS = {"factors": "als_factors", "regularization": "als_regularization", "alpha": "als_alpha"}
_KNN_KEYS = {"knn_k": "knn_k", "knn_shrink": "knn_shrink"}


class _Scorer:
    """Fits candidates on a carve and scores them, keeping the best fit of each family."""

    def __init__(self, split: ValidationSplit) -> None:
        self.split = split
        self.weights = split.train.matrix()
        self.rows = split.train.select(split.users).matrix()
        self.trials: list[dict[str, Any]] = []
        self.best: dict[str, tuple[float, CFConfig, Any]] = {}
        self.last_cost: dict[str, float] = {}

    def __call__(self, family: str, cfg: CFConfig) -> float:
        for t in self.trials:
            if t["family"] == family and t["settings"] == _settings(family, cfg):
                return float(t["ndcg@10"])
        t0 = time.perf_counter()
        if family == "als":
            stats = bm25_stats(self.weights) if cfg.confidence == "bm25" else None
            _, factors = fit_factors(apply_confidence(self.weights, cfg, stats), cfg)
            users = fold_in(factors, apply_confidence(self.rows, cfg, stats), cfg)
            fitted: Any = factors
            score = batched_ndcg(lambda pos: users[pos] @ factors.T, self.split)
        else:
            fitted = fit_item_item(self.weights, cfg.model_copy(update={"component": family}))
            assert fitted is not None
            score = batched_ndcg(lambda pos: fitted.scores(self.rows[pos]), self.split)
        cost = time.perf_counter() - t0
        self.last_cost[family] = cost
        self.trials.append({"family": family, "settings": _settings(family, cfg), "ndcg@10": round(score, 5),
                            "seconds": round(cost, 2)})
        log.info("tuning %s %s: validation ndcg@10 %.4f (%.1fs)", family, _settings(family, cfg), score, cost)
        if family not in self.best or score > self.best[family][0] + 1e-9:
            self.best[family] = (score, cfg, fitted)
        return score


def _settings(family: str, cfg: CFConfig) -> dict[str, float]:
    if family == "als":
        return {"factors": cfg.factors, "regularization": cfg.regularization, "alpha": cfg.alpha}
    if family == "ease":
        return {"ease_lambda": cfg.ease_lambda}
    return {"knn_k": cfg.knn_k, "knn_shrink": cfg.knn_shrink}


def _family_steps(family: str, cfg: CFConfig, scorer: _Scorer) -> Iterator[Callable[[], None]]:
    """The steps of one family's coordinate ascent (each step: try one value of one setting)."""
    t = cfg.tuning
    if family == "als":
        keys = _ALS_KEYS
    elif family == "itemknn":
        keys = _KNN_KEYS
    else:
        keys = {"ease_lambda": "ease_lambda"}
    start = cfg
    if family == "ease" and cfg.ease_lambda not in t.ease_lambda:  # start in the middle of the grid
        start = cfg.model_copy(update={"ease_lambda": t.ease_lambda[len(t.ease_lambda) // 2]})
    yield lambda: scorer(family, start)
    for key, grid_name in keys.items():
        for value in getattr(t, grid_name):
            def step(key: str = key, value: float = value) -> None:
                best_cfg = scorer.best[family][1]
                if float(getattr(best_cfg, key)) != float(value):
                    scorer(family, best_cfg.model_copy(update={key: type(getattr(best_cfg, key))(value)}))
            yield step


def tune_cf(history: History, cfg: CFConfig, budget_s: float) -> TuningResult:
    """Choose ``cf.component`` and the hyperparameters on a temporal carve of ``history`` (see module doc).

    Returns:
        the chosen configuration (``cfg`` itself when tuning is off or there is nothing to validate on),
        a report (every trial with its validation NDCG and seconds, the winner, skipped steps), and the
        winner's fit on the carve.
    """
    t = cfg.tuning
    if not t.enabled:
        return TuningResult(cfg, {"enabled": False})
    t0 = time.perf_counter()
    split = temporal_holdout(history, cfg.hybrid.validation_fraction, t.max_validation_users, cfg.seed)
    if split.users.shape[0] == 0:
        return TuningResult(cfg, {"enabled": True, "skipped": "no user with two or more items"})
    families = [f for f in ("als", "itemknn", "ease") if f in t.components]
    if "ease" in families and history.n_items > t.ease_max_items:
        families.remove("ease")
        log.info("tuning: EASE not tried (%d items > cf.tuning.ease_max_items %d)", history.n_items, t.ease_max_items)
    if "als" not in families:
        families.insert(0, "als")  # the item factors are needed either way
    scorer = _Scorer(split)
    queues = {f: _family_steps(f, cfg, scorer) for f in families}
    skipped: list[str] = []
    while queues:
        for family in list(queues):
            step = next(queues[family], None)
            if step is None:
                del queues[family]
                continue
            spent = time.perf_counter() - t0
            if family in scorer.best and spent + scorer.last_cost.get(family, 0.0) > budget_s:
                skipped.append(family)
                del queues[family]
                continue
            step()
    winner = max(scorer.best, key=lambda f: scorer.best[f][0])
    best_als = scorer.best["als"]
    chosen = best_als[1].model_copy(update={"component": winner})
    if winner != "als":
        chosen = chosen.model_copy(update=_settings(winner, scorer.best[winner][1]))
    report = {
        "enabled": True,
        "validation_users": int(split.users.shape[0]),
        "budget_s": budget_s,
        "seconds": round(time.perf_counter() - t0, 2),
        "component": winner,
        "settings": {**_settings("als", chosen), **(_settings(winner, chosen) if winner != "als" else {})},
        "best_ndcg@10": {f: round(v[0], 5) for f, v in scorer.best.items()},
        "trials": scorer.trials,
        "out_of_budget": sorted(set(skipped)),
    }
    log.info("tuning chose %s %s (validation ndcg@10 %.4f) in %.1fs", winner, report["settings"],
             scorer.best[winner][0], report["seconds"])
    item_item = scorer.best[winner][2] if winner != "als" else None
    return TuningResult(chosen, report, Prefit(best_als[2], item_item))

