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
from recsys.ranking.hybrid import HybridComponents, cold_als_config
from recsys.ranking.scoring import zscore_rows

__all__ = ["ContentInput", "as_blocks", "fit_components", "with_cold_factors"]


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
                   cold_als: tuple[int, float, float] | None = None) -> HybridComponents:
    """Fit the CF factors (and the item-item component of ``cfg.component``), the content -> factor map
    and the popularity prior on a training history.

    Args:
        prefit: ``(item_factors, item_item)`` already fitted on this very history with ``cfg`` (tuning).
        cold_als: ALS settings ``(factors, regularization, alpha)`` of the cold path's own factors
            (``HybridParams.cold_als``; :func:`with_cold_factors`), or ``None``.
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
    return comp if cold_als is None else with_cold_factors(comp, history, cfg, cold_als)


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
