"""Fitting the hybrid recommender (the score is :mod:`recsys.ranking.hybrid`, where the design is described).

:class:`HybridRecommender` chooses the settings on validation splits of the training
history (:mod:`recsys.recommend.selection`) unless they are given, fits the item side
(:func:`recsys.recommend.components.fit_components`, and SASRec when validation gave it a weight:
:func:`recsys.cf.sasrec.fit_sasrec`), and scores users with the
functions of :mod:`recsys.ranking.hybrid`. The evaluation and the served feed model both use it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from recsys.cf.history import History
from recsys.cf.sasrec import fit_sasrec
from recsys.cf.settings import CFConfig
from recsys.ranking.hybrid import HybridComponents, HybridParams, hybrid_scores, user_components
from recsys.recommend.components import ContentInput, as_blocks, fit_components
from recsys.recommend.selection import select_params
from recsys.recommend.tuning import tune_cf

log = logging.getLogger(__name__)

__all__ = ["HybridRecommender"]


@dataclass
class HybridRecommender:
    """Fit on a training history (+ optional item content), then score users.

    Args:
        cfg: the ``cf`` section (factorisation and the ``hybrid`` search grids).
        params: fixed settings; ``None`` chooses them (and, with ``cf.tuning.enabled``, the CF component
            and its hyperparameters: :mod:`recsys.recommend.tuning`) on validation splits of the training history.
        budget_s: time budget of the CF tuning and the SASRec fits (``train.budget_s``): SASRec gets what
            the tuning leaves (:func:`~recsys.recommend.selection.select_params`).
    """

    cfg: CFConfig
    params: HybridParams | None = None
    components: HybridComponents | None = None
    history: History | None = None
    selection: dict[str, Any] = field(default_factory=dict)
    budget_s: float = 240.0

    def fit(self, history: History, content: ContentInput = None) -> HybridRecommender:
        """Choose settings (unless given) and fit the components on the whole training history.

        Args:
            content: one ``(n_items, d)`` matrix or one or two blocks (e.g. text, image), rows L2-normalised.
        """
        content = as_blocks(content, history.n_items)
        if self.params is None:
            t0 = time.perf_counter()
            tuned = tune_cf(history, self.cfg, self.budget_s)  # the CF component, on validation
            self.cfg = tuned.cfg
            prefit = None if tuned.prefit is None else (tuned.prefit.item_factors, tuned.prefit.item_item)
            left = self.budget_s - (time.perf_counter() - t0)
            self.params, self.selection = select_params(history, content, self.cfg, prefit=prefit,
                                                        sasrec_seconds=max(left, 0.0))
            self.selection["tuning"] = tuned.report
            self.selection["seconds"] = round(time.perf_counter() - t0, 2)
            log.info("hybrid settings chosen on validation: %s", asdict(self.params))
        self.components = fit_components(history, content, self.cfg, cold_als=self.params.cold_als,
                                         bilinear=self.params.cold_bilinear > 0)
        if self.params.sasrec_weight > 0 and self.params.sasrec_epochs > 0:  # as many epochs as on the carve
            fit = fit_sasrec(history, self.cfg.sasrec, self.cfg.seed, max_seconds=float("inf"),
                             epochs=int(self.params.sasrec_epochs))
            self.components = replace(self.components, sasrec=fit.model)
            if "sasrec" in self.selection:
                self.selection["sasrec"]["final_fit"] = {k: fit.report.get(k) for k in ("epochs", "seconds", "loss")}
        self.history = history
        return self

    def _require(self) -> tuple[HybridComponents, History, HybridParams]:
        if self.components is None or self.history is None or self.params is None:
            raise RuntimeError("fit the HybridRecommender first")
        return self.components, self.history, self.params

    def score_history(self, rows: History) -> np.ndarray:
        """Scores ``(rows.n_users, n_items)`` for users given by their histories (new users: fold-in)."""
        comp, _, params = self._require()
        u = user_components(comp, rows, params, self.cfg)
        return hybrid_scores(u.cf, u.content, comp.pop, comp.warm, params, u.scale, u.cold_content, u.cold_cf)

    def score(self, users: np.ndarray) -> np.ndarray:
        """Scores ``(len(users), n_items)`` for rows of the training history."""
        _, history, _ = self._require()
        return self.score_history(history.select(np.asarray(users, dtype=np.int64)))
