"""Choosing the hybrid's settings on validation splits carved from the training history.

Three stages, each a coordinate ascent (:func:`coordinate_ascent`) over grids from ``cf.hybrid``,
maximising validation NDCG@10:

1. temporal hold-out (:func:`~recsys.cf.validation.temporal_holdout`): recency of the fold-in, content
   profile constant and kernel, CF shrinkage for sparse users, and the warm weights (cold settings tied
   to them);
2. item hold-out (:func:`~recsys.cf.validation.item_holdout`; the mean over ``cf.hybrid.cold_carves``
   of them): the weights and content profile of items without events, once per candidate ALS setting of their content-mapped factors (the warm settings and
   ``cf.hybrid.cold_als``; each other setting is one more ALS fit on the carve), the best kept;
3. temporal hold-out again: the scale and offset that put cold items' scores beside warm ones.

The SASRec sequence model (:mod:`recsys.cf.sasrec`) is trained on the temporal carve's training part
(its epoch count chosen by its own validation NDCG on the carve) when the time left in ``train.budget_s``
allows, and its weight in the CF score is one more setting of stage 1 (``sasrec_weight``, 0 = off). The
item hold-out carves of stage 2 are scored without it (one more fit per carve would not fit the budget):
their cold items have no SASRec score anyway.

Nothing here sees a test split: the caller passes only its training history.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any

import numpy as np

from recsys.cf.history import History
from recsys.cf.sasrec import SasrecFit, SasrecModel, fit_sasrec
from recsys.cf.settings import CFConfig
from recsys.cf.validation import ValidationSplit, item_holdout, temporal_holdout
from recsys.ranking.hybrid import (
    HybridComponents,
    HybridParams,
    bilinear_component,
    cf_component,
    cf_scale,
    cold_cf_component,
    content_component,
    hybrid_scores,
    sasrec_component,
    seq_component,
    uses_bilinear,
    with_sequence,
)
from recsys.ranking.metrics import ndcg_at_k, rank_top_k
from recsys.ranking.scoring import BlockSimilarity
from recsys.recommend.components import cold_map_solver, fit_components, with_cold_factors, with_content_map

log = logging.getLogger(__name__)

__all__ = ["batched_ndcg", "cold_als_candidates", "coordinate_ascent", "score_on_item_carves", "select_params",
           "validation_ndcg"]


def coordinate_ascent(
    evaluate: Callable[[HybridParams], float],
    start: HybridParams,
    space: Mapping[str, Sequence[float]],
    rounds: int = 2,
) -> tuple[HybridParams, float, list[tuple[dict[str, float], float]]]:
    """Improve one setting at a time over its grid, keeping any strict improvement; repeat ``rounds`` times.

    Returns:
        the best settings, their score, and the trace of ``(changed settings, score)`` evaluated.
    """
    best, best_score = start, evaluate(start)
    trace: list[tuple[dict[str, float], float]] = [({}, best_score)]
    for _ in range(rounds):
        improved = False
        for name, values in space.items():
            for value in values:
                if float(value) == float(getattr(best, name)):
                    continue
                cand = replace(best, **{name: float(value)})
                score = evaluate(cand)
                trace.append(({name: float(value)}, score))
                if score > best_score + 1e-9:
                    best, best_score, improved = cand, score, True
        if not improved:
            break
    return best, best_score, trace


def _tie_cold(p: HybridParams) -> HybridParams:
    """The cold settings set to the warm ones."""
    return replace(p, cold_cf=p.warm_cf, cold_content=p.warm_content, cold_pop=p.warm_pop,
                   cold_profile_tau=p.profile_tau, cold_profile_gamma=p.profile_gamma, cold_content_mix=p.content_mix)


class _Evaluator:
    """Validation NDCG of settings on one split, caching the per-user components."""

    def __init__(self, comp: HybridComponents, split: ValidationSplit, cfg: CFConfig, tie_cold: bool) -> None:
        self.comp, self.split, self.cfg, self.tie_cold = comp, split, cfg, tie_cold
        self.rows = split.train.select(split.users)
        self._cf: dict[tuple[float, ...], np.ndarray] = {}
        self._cold_cf: dict[tuple[Any, ...], np.ndarray | None] = {}
        self._seq: dict[tuple[str, float], np.ndarray] = {}
        self._last_sum: tuple[tuple[float, ...], np.ndarray] | None = None
        self._sasrec: np.ndarray | None = None
        self._content: dict[tuple[float, float, float], np.ndarray | None] = {}
        self._scores: dict[HybridParams, float] = {}
        self._sim: BlockSimilarity | None = None
        self._bil: np.ndarray | None = None

    def _cf_scores(self, tau: float, beta: float, seq_weight: float = 0.0, seq_tau: float = 1.0,
                   sasrec_weight: float = 0.0) -> np.ndarray:
        use_seq = seq_weight > 0 and self.comp.seq is not None
        use_sasrec = sasrec_weight > 0 and self.comp.sasrec is not None
        if use_seq or use_sasrec:  # as cf_component: plain CF, then transitions, then SASRec; the parts are
            key_sum = (tau if beta else 0.0, beta, seq_weight if use_seq else 0.0,  # cached, and the last sum
                       seq_tau if use_seq else 0.0, sasrec_weight if use_sasrec else 0.0)  # (cold stages keep one)
            if self._last_sum is None or self._last_sum[0] != key_sum:
                cf = self._cf_scores(tau, beta)
                if use_seq:
                    if ("seq", seq_tau) not in self._seq:
                        self._seq[("seq", seq_tau)] = seq_component(self.comp, self.rows, seq_tau)
                    cf = with_sequence(cf, self._seq[("seq", seq_tau)], seq_weight)
                if use_sasrec:
                    if self._sasrec is None:
                        self._sasrec = sasrec_component(self.comp, self.rows)
                    cf = with_sequence(cf, self._sasrec, sasrec_weight)
                self._last_sum = (key_sum, cf)
            return self._last_sum[1]
        key = (tau if beta else 0.0, beta)
        if key not in self._cf:
            self._cf[key] = cf_component(self.comp, self.rows, tau, beta, self.cfg)
        return self._cf[key]

    def _cold_cf_scores(self, p: HybridParams) -> np.ndarray | None:
        key = (p.recency_tau if p.recency_beta else 0.0, p.recency_beta, p.cold_als)
        if key not in self._cold_cf:
            self._cold_cf[key] = cold_cf_component(self.comp, self.rows, p, self.cfg)
        return self._cold_cf[key]

    def with_components(self, comp: HybridComponents) -> _Evaluator:
        """An evaluator on the same split for ``comp``, which differs from this one's only in its cold
        factors: the CF, transition and content scores cached so far are shared."""
        other = _Evaluator(comp, self.split, self.cfg, self.tie_cold)
        other.rows, other._cf, other._seq, other._content = self.rows, self._cf, self._seq, self._content
        other._last_sum, other._sasrec = self._last_sum, self._sasrec
        other._sim = self._sim
        if comp.content_map is self.comp.content_map:  # the learned content score too
            other._bil = self._bil
        return other

    def _cold_content_scores(self, p: HybridParams) -> np.ndarray | None:
        """The cold content score: the kernel's, with the learned content score when ``p`` weighs it in."""
        kernel = self._content_scores(p.cold_profile_tau, p.cold_profile_gamma, p.cold_content_mix)
        if kernel is None or not uses_bilinear(self.comp, p):
            return kernel
        if self._bil is None:
            self._bil = bilinear_component(self.comp, self.rows)
        return with_sequence(kernel, self._bil, p.cold_bilinear)  # not cached: one more (users, items) array each

    def _content_scores(self, tau: float, gamma: float, mix: float) -> np.ndarray | None:
        key = (tau, gamma, mix)
        if key not in self._content:
            if self._sim is None and self.comp.content is not None:
                self._sim = BlockSimilarity.build(self.rows.matrix(), self.comp.content)
            self._content[key] = content_component(self.comp, self.rows, tau, gamma, mix, self._sim)
        return self._content[key]

    def __call__(self, p: HybridParams) -> float:
        if self.tie_cold:
            p = _tie_cold(p)
        if p not in self._scores:
            cf = self._cf_scores(p.recency_tau, p.recency_beta, p.seq_weight, p.seq_tau, p.sasrec_weight)
            content = None
            if p.warm_content or p.cold_content:
                content = self._content_scores(p.profile_tau, p.profile_gamma, p.content_mix)
            cold_content = None
            if p.cold_content:
                cold_content = self._cold_content_scores(p)
            cold_cf = self._cold_cf_scores(p) if p.cold_cf else None
            scale = cf_scale(self.rows, p.cf_shrink)
            scores = hybrid_scores(cf, content, self.comp.pop, self.comp.warm, p, scale, cold_content, cold_cf)
            self._scores[p] = validation_ndcg(scores, self.split)
        return self._scores[p]


def select_params(
    history: History, content: tuple[np.ndarray, ...] | None, cfg: CFConfig,
    prefit: tuple[np.ndarray, Any] | None = None, sasrec_seconds: float = 0.0,
) -> tuple[HybridParams, dict[str, Any]]:
    """Choose :class:`HybridParams` on validation carves of ``history`` (see the module docstring).

    ``prefit``: the CF fit on the temporal carve's training part, when tuning made it already.
    ``sasrec_seconds``: wall time left for SASRec's two fits (on the carve, then on ``history``); the
    carve's fit gets its share by pairs (capped at ``cf.sasrec.max_seconds``); 0: not trained.

    Returns:
        the settings and a report (validation NDCG of each stage, number of validation users).
    """
    h = cfg.hybrid
    has_content = content is not None
    n_blocks = 0 if content is None else len(content)
    grid = tuple(h.weight_grid)
    report: dict[str, Any] = {}

    temporal = temporal_holdout(history, h.validation_fraction, h.max_validation_users, cfg.seed)
    eval_t = _Evaluator(fit_components(temporal.train, content, cfg, prefit), temporal, cfg, tie_cold=True)
    sasrec = _carve_sasrec(eval_t, history, cfg, sasrec_seconds)
    report["sasrec"] = sasrec.report
    if sasrec.model is not None:
        eval_t.comp = replace(eval_t.comp, sasrec=sasrec.model)
    start = HybridParams(recency_tau=h.recency_tau[0], profile_tau=h.profile_tau[-1])
    space_a: dict[str, Sequence[float]] = {
        "recency_beta": h.recency_beta,
        "recency_tau": h.recency_tau,
        **({"seq_weight": h.seq_weight, "seq_tau": h.seq_tau} if eval_t.comp.seq is not None else {}),
        **({"sasrec_weight": h.sasrec_weight} if eval_t.comp.sasrec is not None else {}),
        "warm_pop": grid,
    }
    if has_content:
        space_a.update({
            "warm_content": grid,
            "profile_tau": h.profile_tau,
            "profile_gamma": h.profile_gamma,
            **({"content_mix": h.content_mix} if n_blocks > 1 else {}),
            "warm_cf": (0.0, 1.0),
            "cf_shrink": h.cf_shrink,
        })
    params, score_a, _ = coordinate_ascent(eval_t, start, space_a, h.rounds)
    params = _tie_cold(params)
    if sasrec.model is not None:  # the validation score with and without it, the rest as chosen
        without = eval_t(replace(params, sasrec_weight=0.0))
        report["sasrec"].update({"weight": params.sasrec_weight, "blend_ndcg@10_with": round(score_a, 5),
                                 "blend_ndcg@10_without": round(without, 5)})
        if params.sasrec_weight > 0:
            params = replace(params, sasrec_epochs=float(sasrec.model.epochs))
        log.info("validation: SASRec weight %g (ndcg@10 %.4f with it, %.4f without)", params.sasrec_weight,
                 score_a, without)
    report["temporal"] = {"users": int(temporal.users.shape[0]), "ndcg@10": round(score_a, 5)}
    log.info("validation (temporal): ndcg@10 %.4f with %s", score_a, asdict(params))

    if has_content:
        carves = [item_holdout(history, h.validation_fraction, h.max_validation_users, cfg.seed + i)
                  for i in range(h.cold_carves)]
        carves = [c for c in carves if c.users.shape[0] > 0]
        if carves:
            learned = any(w > 0 for w in h.cold_bilinear)  # the learned content score is a candidate
            evals = [_Evaluator(fit_components(c.train, content, cfg, bilinear=learned), c, cfg, tie_cold=False)
                     for c in carves]
            space_b = {
                "cold_content": grid,
                "cold_profile_tau": h.profile_tau,
                "cold_profile_gamma": h.profile_gamma,
                **({"cold_content_mix": h.content_mix} if n_blocks > 1 else {}),
                "cold_cf": (0.0, 1.0),
                "cold_pop": grid,
                **({"cold_bilinear": h.cold_bilinear} if evals[0].comp.content_map is not None else {}),
            }
            params, score_b, report["cold_items"] = _select_cold(evals, params, space_b, cfg)
            log.info("validation (cold items): ndcg@10 %.4f, cold ALS %s, learned content weight %g", score_b,
                     params.cold_als, params.cold_bilinear)
            if params.cold_als is not None:  # the temporal carve's cold items get the same kind of factors
                eval_t = eval_t.with_components(with_cold_factors(eval_t.comp, temporal.train, cfg, params.cold_als))
            if params.cold_bilinear > 0:  # and the learned content score
                eval_t = eval_t.with_components(with_content_map(eval_t.comp, temporal.train, cfg))
        eval_t.tie_cold = False
        space_c = {"cold_scale": h.cold_scale, "cold_offset": h.cold_offset}
        params, score_c, _ = coordinate_ascent(eval_t, params, space_c, h.rounds)
        report["temporal_cold_offset"] = {"ndcg@10": round(score_c, 5)}
    report["params"] = asdict(params)
    return params, report


def score_on_item_carves(params: HybridParams, history: History, content: tuple[np.ndarray, ...] | None,
                         cfg: CFConfig, seeds: Sequence[int]) -> list[float]:
    """Validation NDCG@10 of chosen ``params`` on item hold-out carves of ``history`` with ``seeds`` (pass
    seeds :func:`select_params` did not use, i.e. ``>= cf.hybrid.cold_carves``): how well the cold stage's
    choice holds on items it was not chosen on, still without a test split."""
    h = cfg.hybrid
    out = []
    for seed in seeds:
        carve = item_holdout(history, h.validation_fraction, h.max_validation_users, cfg.seed + seed)
        comp = fit_components(carve.train, content, cfg, bilinear=params.cold_bilinear > 0)
        if params.cold_als is not None:
            comp = with_cold_factors(comp, carve.train, cfg, params.cold_als)
        out.append(_Evaluator(comp, carve, cfg, tie_cold=False)(params))
    return out


def _carve_sasrec(eval_t: _Evaluator, history: History, cfg: CFConfig, seconds: float) -> SasrecFit:
    """SASRec trained on the temporal carve's training part, its epochs chosen by its own validation NDCG
    there, within the carve's share of ``seconds`` (see :func:`select_params`); a skipped fit says why."""
    if not cfg.sasrec.enabled:
        return SasrecFit(None, {"trained": False, "skipped": "cf.sasrec.enabled is false"})
    train = eval_t.split.train
    share = train.items.shape[0] / max(train.items.shape[0] + history.items.shape[0], 1)
    cap = min(cfg.sasrec.max_seconds, seconds * share)
    if cap <= 0:
        return SasrecFit(None, {"trained": False, "skipped": "out of budget: no time left in train.budget_s"})
    rows = eval_t.rows

    def validate(model: SasrecModel) -> float:
        scores = model.scores(rows)
        return batched_ndcg(lambda pos: scores[pos], eval_t.split)

    return fit_sasrec(train, cfg.sasrec, cfg.seed, max_seconds=cap, validate=validate)


def cold_als_candidates(cfg: CFConfig) -> list[tuple[int, float, float]]:
    """The ALS settings tried for the cold path's factors: the warm ones first, then ``cf.hybrid.cold_als``
    (without repeats)."""
    out = [(int(cfg.factors), float(cfg.regularization), float(cfg.alpha))]
    for f, reg, alpha in cfg.hybrid.cold_als:
        cand = (int(f), float(reg), float(alpha))
        if cand not in out:
            out.append(cand)
    return out


def _select_cold(evals: list[_Evaluator], start: HybridParams, space: Mapping[str, Sequence[float]],
                 cfg: CFConfig) -> tuple[HybridParams, float, dict[str, Any]]:
    """Stage 2: the cold weights and profile chosen by coordinate ascent of the mean validation NDCG over
    the item hold-out carves ``evals`` (one carve's choice is noisy: a few hundred users), once per
    candidate ALS setting of the cold factors (:func:`cold_als_candidates`; the first, the warm setting,
    uses each carve's own fit), the best kept (ties: the earlier candidate). Settings whose ascent ends with
    ``cold_cf`` 0 do not use the factors and are recorded as the warm ones (no extra fit)."""
    best: tuple[HybridParams, float] | None = None
    trials = []
    candidates = cold_als_candidates(cfg)
    # each carve's cold factors for every other setting, carve by carve (one ridge Gram matrix at a time)
    cold_comps: list[list[HybridComponents]] = [[] for _ in candidates[1:]]
    for e in evals:
        solver = cold_map_solver(e.comp, cfg)
        for j, settings in enumerate(candidates[1:]):
            cold_comps[j].append(with_cold_factors(e.comp, e.split.train, cfg, settings, solver))
        del solver
    for i, settings in enumerate(candidates):
        if i == 0:
            evs, p0 = evals, start
        else:
            evs = [e.with_components(c) for e, c in zip(evals, cold_comps[i - 1], strict=True)]
            p0 = replace(start, cold_als_factors=float(settings[0]), cold_als_regularization=settings[1],
                         cold_als_alpha=settings[2])

        def mean_ndcg(p: HybridParams, evs: list[_Evaluator] = evs) -> float:
            return float(np.mean([e(p) for e in evs]))

        p, score, _ = coordinate_ascent(mean_ndcg, p0, space, cfg.hybrid.rounds)
        if not p.cold_cf:
            p = replace(p, cold_als_factors=0.0, cold_als_regularization=0.0, cold_als_alpha=0.0)
        trials.append({"factors": settings[0], "regularization": settings[1], "alpha": settings[2],
                       "ndcg@10": round(score, 5), "cold_cf": p.cold_cf})
        log.info("validation (cold items), cold ALS %s: ndcg@10 %.4f", settings, score)
        if best is None or score > best[1] + 1e-9:
            best = (p, score)
    assert best is not None
    p, score = best
    chosen = p.cold_als or "warm"
    return p, score, {"users": [int(e.split.users.shape[0]) for e in evals], "ndcg@10": round(score, 5),
                      "cold_als": chosen, "cold_als_trials": trials}


def validation_ndcg(scores: np.ndarray, split: ValidationSplit, k: int = 10) -> float:
    """Mean NDCG@k of ``(len(split.users), n_items)`` scores on a validation split."""
    if split.users.shape[0] == 0:
        return 0.0
    if split.candidates is not None:
        ranked = split.candidates[rank_top_k(scores[:, split.candidates], k)]
    else:
        seen = split.train.select(split.users).matrix()
        ranked = rank_top_k(scores, k, seen)
    return float(ndcg_at_k(ranked, split.targets, k).mean())


def batched_ndcg(score: Callable[[np.ndarray], np.ndarray], split: ValidationSplit, batch: int = 1000,
                 k: int = 10) -> float:
    """:func:`validation_ndcg` in batches of users (bounds the ranking's float64 copies).

    Args:
        score: positions ``(b,)`` into ``split.users`` -> their scores ``(b, n_items)``.
    """
    n = split.users.shape[0]
    if n == 0:
        return 0.0
    total = 0.0
    for start in range(0, n, batch):
        pos = np.arange(start, min(start + batch, n))
        part = ValidationSplit(split.train, split.users[pos], [split.targets[i] for i in pos], split.candidates)
        total += validation_ndcg(score(pos), part, k) * pos.shape[0]
    return total / n
