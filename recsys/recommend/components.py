"""The hybrid's item side fitted on a training history (the score itself: :mod:`recsys.ranking.hybrid`).

:func:`fit_components` fits ALS (or BPR) factors, the ridge maps content -> CF factor and content ->
popularity for items without events, and the standardised popularity. Used for the final fit and for
each validation carve of :mod:`recsys.recommend.selection`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from recsys.cf.history import History
from recsys.cf.matrix import apply_confidence, bm25_stats
from recsys.cf.model import fit_factors
from recsys.cf.ridge import fit_ridge
from recsys.cf.settings import CFConfig
from recsys.ranking.hybrid import HybridComponents
from recsys.ranking.scoring import zscore_rows

__all__ = ["ContentInput", "as_blocks", "fit_components"]


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


def fit_components(history: History, content: ContentInput, cfg: CFConfig) -> HybridComponents:
    """Fit the CF factors, the content -> factor map and the popularity prior on a training history."""
    blocks = as_blocks(content, history.n_items)
    weights = history.matrix()
    stats = bm25_stats(weights) if cfg.confidence == "bm25" else None
    t0 = time.perf_counter()
    _, item_factors = fit_factors(apply_confidence(weights, cfg, stats), cfg)
    fit_s = time.perf_counter() - t0
    counts = history.item_counts()
    warm = counts > 0
    pop = np.log1p(counts).astype(np.float32)
    mapping = pop_map = None
    if blocks is not None and warm.any():  # fitted even when every item is warm: later items need them
        x = np.concatenate(blocks, axis=1)
        mapping = fit_ridge(x[warm], item_factors[warm], cfg.hybrid.mapping_l2)
        pop_map = fit_ridge(x[warm], pop[warm], cfg.hybrid.mapping_l2)
        if (~warm).any():
            item_factors[~warm] = mapping(x[~warm])
            pop[~warm] = pop_map(x[~warm])[:, 0]
    elif (~warm).any():
        item_factors[~warm] = 0.0
    pop_z = zscore_rows(pop[None, :])[0]
    return HybridComponents(item_factors, warm, pop_z, blocks, stats, fit_s, mapping, pop_map,
                            float(pop.mean()), float(pop.std()) or 1.0)
