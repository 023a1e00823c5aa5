"""Yardstick rows of ``recsys evaluate``: strong plain CF baselines measured in the same run as the hybrid.

- **"ALS, grid best on test"**: implicit ALS over the grid factors {64, 128} x regularisation {0.01, 0.1}
  x alpha {1, 10}, 20 iterations, each evaluated on the protocol's *test* split and the best one
  reported. This row peeks at the test split on purpose (a generous bar, as the published peers are);
  nothing else in the project does.
- **"EASE, lambda on validation"**: EASE with its penalty chosen on the temporal validation carve of the
  training events (the hybrid's own carve), then refitted on all training events.

Both score users by their plain training rows (weight 1 per pair), with no recency, content or popularity.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from recsys.cf.ease import fit_ease
from recsys.cf.settings import CFConfig
from recsys.cf.validation import temporal_holdout
from recsys.recommend.selection import batched_ndcg
from recsys.evaluation.models import ALSOnly, TrainData
from recsys.evaluation.protocols import Split
from recsys.evaluation.runner import ResultRow, evaluate_model

log = logging.getLogger(__name__)

__all__ = ["ALS_GRID", "ALS_TEST_NAME", "EASE_NAME", "EASEOnValidation", "als_grid_best_on_test", "yardstick_rows"]

ALS_TEST_NAME = "ALS, grid best on test"
EASE_NAME = "EASE, λ on validation"
ALS_GRID = {"factors": (64, 128), "regularization": (0.01, 0.1), "alpha": (1.0, 10.0)}
ALS_ITERATIONS = 20


def als_grid_best_on_test(split: Split, data: TrainData, cfg: CFConfig, k: int = 10) -> ResultRow:
    """Evaluate every point of :data:`ALS_GRID` on the test split and return the best row (relabelled)."""
    rows: list[tuple[dict[str, float], ResultRow]] = []
    for f, reg, alpha in itertools.product(*ALS_GRID.values()):
        settings = {"factors": f, "regularization": reg, "alpha": alpha, "iterations": ALS_ITERATIONS}
        model = ALSOnly(cfg.model_copy(update={**settings, "confidence": "alpha", "model": "als"}))
        rows.append((settings, evaluate_model(model, split, data, k)))
    best_settings, best = max(rows, key=lambda r: r[1].ndcg)
    details = {"chosen_on": "test split", "best": best_settings,
               "grid": [{**s, f"ndcg@{k}": round(r.ndcg, 5)} for s, r in rows]}
    return replace(best, model=ALS_TEST_NAME, seconds=sum(r.seconds for _, r in rows), details=details)


@dataclass
class EASEOnValidation:
    """EASE, lambda chosen on the temporal validation carve of the training history."""

    cfg: CFConfig
    name: str = EASE_NAME
    lambdas: tuple[float, ...] = ()
    known: dict[float, float] = field(default_factory=dict)
    """Validation NDCG of lambdas already measured on this very carve (the hybrid's tuning trials)."""
    b: np.ndarray | None = None
    rows: Any = None
    details: dict[str, Any] = field(default_factory=dict)

    def fit(self, data: TrainData) -> None:
        h = data.history
        lambdas = self.lambdas or self.cfg.tuning.ease_lambda
        carve = temporal_holdout(h, self.cfg.hybrid.validation_fraction, self.cfg.tuning.max_validation_users,
                                 self.cfg.seed)
        val_rows = carve.train.select(carve.users).matrix()
        scores: dict[float, float] = {lam: self.known[lam] for lam in lambdas if lam in self.known}
        for lam in (lam for lam in lambdas if lam not in scores):
            t0 = time.perf_counter()
            b = fit_ease(carve.train.matrix(), lam)
            scores[lam] = batched_ndcg(lambda pos, b=b: np.asarray(val_rows[pos] @ b, dtype=np.float32), carve)
            del b
            log.info("EASE lambda %g: validation ndcg@10 %.4f (%.1fs)", lam, scores[lam], time.perf_counter() - t0)
        best = max(scores, key=lambda lam: scores[lam])
        self.b = fit_ease(h.matrix(), best)
        self.rows = h.matrix()
        self.details = {"lambda": best, "validation_ndcg@10": {str(k): round(v, 5) for k, v in scores.items()},
                        "reused_from_hybrid_tuning": sorted(str(lam) for lam in self.known if lam in lambdas)}

    def score(self, users: np.ndarray) -> np.ndarray:
        if self.b is None:
            raise RuntimeError("fit first")
        return np.asarray(self.rows[users] @ self.b, dtype=np.float32)


def _hybrid_ease_trials(rows: list[ResultRow], cfg: CFConfig) -> dict[float, float]:
    """EASE validation scores the hybrid's tuning measured on the same carve (same carve settings)."""
    out: dict[float, float] = {}
    for r in rows:
        tuning = r.details.get("tuning") or {} if r.model == "hybrid" else {}
        if tuning.get("validation_users") is None:
            continue
        for t in tuning.get("trials", []):
            if t["family"] == "ease":
                out[float(t["settings"]["ease_lambda"])] = float(t["ndcg@10"])
    return out


def yardstick_rows(split: Split, data: TrainData, cfg: CFConfig, k: int = 10,
                   done: list[ResultRow] | None = None) -> list[ResultRow]:
    """The two yardstick rows (EASE only up to ``cf.tuning.ease_max_items`` items; temporal protocols only:
    on cold items neither model can score a cold item).

    ``done``: the rows already measured on this split; EASE validation scores the hybrid's tuning measured
    on the same carve are reused instead of refitting those lambdas.
    """
    if split.candidates is not None:
        return []
    out = [als_grid_best_on_test(split, data, cfg, k)]
    if split.n_items <= cfg.tuning.ease_max_items:
        ease = EASEOnValidation(cfg, known=_hybrid_ease_trials(done or [], cfg))
        out.append(evaluate_model(ease, split, data, k))
        ease.b = None  # free n_items^2 floats before the next model
    else:
        log.warning("EASE yardstick skipped: %d items > cf.tuning.ease_max_items", split.n_items)
    return out
