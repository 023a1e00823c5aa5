"""The hybrid's item side fitted on a training history (the score itself: :mod:`recsys.ranking.hybrid`).

:func:`fit_components` fits ALS (or BPR) factors, the ridge maps content -> CF factor and content ->
popularity for items without events, and the standardised popularity. Used for the final fit and for
each validation carve of :mod:`recsys.recommend.selection`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from recsys.cf.history import History
from recsys.cf.itemitem import ItemItem, fit_item_item
from recsys.cf.matrix import apply_confidence, bm25_stats
from recsys.cf.model import fit_factors
from recsys.cf.ridge import RidgeSolver
from recsys.cf.settings import CFConfig
from recsys.ranking.hybrid import HybridComponents, bilinear_input, cold_als_config
from recsys.ranking.scoring import zscore_rows

__all__ = ["ContentInput", "as_blocks", "fit_components", "fit_content_map", "with_cold_factors", "with_content_map"]


ContentInput = np.ndarray | Sequence[np.ndarray] | None
"""Item content as one ``(n_items, d)`` matrix or a sequence of one or two blocks (text, image)."""


def as_blocks(content: ContentInput, n_items: int) -> tuple[np.ndarray, ...] | None:
    """Validate content and return it as a tuple of float32 blocks.

    Raises:
        ValueError: a block with another number of rows than ``n_items``, or more than two blocks.
    """
    if content is None:
        return None
    blocks = (content,) if isinstance(content, np.ndarray) else tuple(content)
    if not 1 <= len(blocks) <= 2:
        raise ValueError(f"content must be one or two blocks, got {len(blocks)}")
    for b in blocks:
        if b.ndim != 2 or b.shape[0] != n_items:
            raise ValueError(f"content has {b.shape[0]} rows, the history {n_items} items")
    return tuple(np.ascontiguousarray(b, dtype=np.float32) for b in blocks)


def fit_components(history: History, content: ContentInput, cfg: CFConfig,
                   prefit: tuple[np.ndarray, ItemItem | None] | None = None,
                   cold_als: tuple[int, float, float] | None = None, bilinear: bool = False) -> HybridComponents:
    """Fit the CF factors (and the item-item component of ``cfg.component``), the content -> factor map
    and the popularity prior on a training history.

    Args:
        prefit: ``(item_factors, item_item)`` already fitted on this very history with ``cfg`` (tuning).
        cold_als: ALS settings ``(factors, regularization, alpha)`` of the cold path's own factors
            (``HybridParams.cold_als``; :func:`with_cold_factors`), or ``None``.
        bilinear: also fit the learned content map (:func:`with_content_map`).
    """
    blocks = as_blocks(content, history.n_items)
    weights = history.matrix()
    stats = bm25_stats(weights) if cfg.confidence == "bm25" else None
    t0 = time.perf_counter()
    if prefit is None:
        _, item_factors = fit_factors(apply_confidence(weights, cfg, stats), cfg)
        item_item = fit_item_item(weights, cfg)
    else:
        item_factors, item_item = prefit[0].copy(), prefit[1]
    fit_s = time.perf_counter() - t0
    counts = history.item_counts()
    warm = counts > 0
    pop = np.log1p(counts).astype(np.float32)
    mapping = pop_map = None
    if blocks is not None and warm.any():  # fitted even when every item is warm: later items need them
        x = np.concatenate(blocks, axis=1)
        solver = RidgeSolver(x[warm], cfg.hybrid.mapping_l2)  # one Gram matrix for both maps
        mapping = solver.fit(item_factors[warm])
        pop_map = solver.fit(pop[warm])
        del solver
        if (~warm).any():
            item_factors[~warm] = mapping(x[~warm])
            pop[~warm] = pop_map(x[~warm])[:, 0]
    elif (~warm).any():
        item_factors[~warm] = 0.0
    pop_z = zscore_rows(pop[None, :])[0]
    seq = None
    if cfg.sequence:
        from recsys.cf.sequence import fit_transitions

        seq = fit_transitions(history, cfg.seq_window, cfg.seq_decay, cfg.seq_shrink)
    comp = HybridComponents(item_factors, warm, pop_z, blocks, stats, fit_s, mapping, pop_map,
                            float(pop.mean()), float(pop.std()) or 1.0, item_item, seq)
    comp = comp if cold_als is None else with_cold_factors(comp, history, cfg, cold_als)
    return with_content_map(comp, history, cfg) if bilinear else comp


def fit_content_map(history: History, blocks: tuple[np.ndarray, ...], warm: np.ndarray, l2: float,
                    max_users: int = 20_000, seed: int = 0) -> np.ndarray:
    """The ``(d, d)`` float32 map ``W`` of :func:`recsys.ranking.hybrid.bilinear_component`.

    With ``X`` the items' :func:`~recsys.ranking.hybrid.bilinear_input`, ``R`` the users' event weights and
    ``A = R X`` their summed history vectors, ``W`` minimises ``|R_w - A W X_w^T|^2`` over the warm items
    ``w`` with a ridge penalty on each side (two-sided ridge, closed form):
    ``W = (A^T A + l_1 I)^-1 A^T R_w X_w (X_w^T X_w + l_2 I)^-1``, where ``l_1``, ``l_2`` are ``l2`` times
    the mean diagonal of ``A^T A`` and ``X_w^T X_w`` (so ``l2`` does not depend on the catalogue's scale).
    At most ``max_users`` users (seeded sample) enter ``A``: the cost is ``(users + items) * d**2``.
    """
    import scipy.linalg

    x = bilinear_input(blocks)
    d = x.shape[1]
    users = np.flatnonzero(history.counts > 0)
    if users.shape[0] > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, size=max_users, replace=False))
    r = history.select(users).matrix().astype(np.float32)
    a = np.asarray(r @ x, dtype=np.float32)
    xw = x[warm]
    ata = a.T @ a
    gram = xw.T @ xw
    cross = a.T @ np.asarray(r[:, np.flatnonzero(warm)] @ xw, dtype=np.float32)
    eye = np.eye(d, dtype=np.float32)
    l_a = np.float32(l2 * max(float(np.trace(ata)) / d, 1e-6))
    l_x = np.float32(l2 * max(float(np.trace(gram)) / d, 1e-6))
    # float32 Cholesky solves: 3x faster than float64 at d = 1664, 1e-5 relative difference (the ridge
    # keeps both systems well conditioned)
    left = scipy.linalg.cho_solve(scipy.linalg.cho_factor(ata + l_a * eye), cross)
    w = scipy.linalg.cho_solve(scipy.linalg.cho_factor(gram + l_x * eye), left.T).T  # left (X_w^T X_w + l_x I)^-1
    return np.ascontiguousarray(w, dtype=np.float32)


def with_content_map(comp: HybridComponents, history: History, cfg: CFConfig) -> HybridComponents:
    """``comp`` plus the learned content map fitted on ``history`` (the one ``comp`` was fitted on);
    unchanged without content or warm items."""
    h = cfg.hybrid
    if comp.content is None or not comp.warm.any():
        return comp
    w = fit_content_map(history, comp.content, comp.warm, h.bilinear_l2, h.bilinear_max_users, cfg.seed)
    return replace(comp, content_map=w)


def cold_map_solver(comp: HybridComponents, cfg: CFConfig) -> RidgeSolver | None:
    """The ridge solver of the content -> CF map on ``comp``'s warm items (``None`` without content or warm
    items), to share among several :func:`with_cold_factors` calls on the same components."""
    if comp.content is None or not comp.warm.any():
        return None
    return RidgeSolver(np.concatenate(comp.content, axis=1)[comp.warm], cfg.hybrid.mapping_l2)


def with_cold_factors(comp: HybridComponents, history: History, cfg: CFConfig,
                      settings: tuple[int, float, float], solver: RidgeSolver | None = None) -> HybridComponents:
    """``comp`` plus the cold path's own factors: one ALS fit with ``settings`` ``(factors,
    regularization, alpha)`` on ``history`` (the one ``comp`` was fitted on), mapped from content for the
    items without events. ``comp`` unchanged when there is no content or no warm item (nothing to map from).

    ``solver``: :func:`cold_map_solver` of ``comp``, when several settings are tried on the same ``comp``.
    """
    if comp.content is None or not comp.warm.any():
        return comp
    cold_cfg = cold_als_config(cfg, settings)
    _, factors = fit_factors(apply_confidence(history.matrix(), cold_cfg, comp.bm25), cold_cfg)
    x = np.concatenate(comp.content, axis=1)
    solver = solver if solver is not None else cold_map_solver(comp, cfg)
    assert solver is not None  # content and warm items: checked above
    mapping = solver.fit(factors[comp.warm])
    if (~comp.warm).any():
        factors[~comp.warm] = mapping(x[~comp.warm])
    return replace(comp, cold_factors=np.ascontiguousarray(factors, dtype=np.float32), cold_factor_map=mapping)
