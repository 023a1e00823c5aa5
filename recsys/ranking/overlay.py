"""A fitted feed model laid over the *serving* catalogue: its item arrays in the service's row order.

Items the model knows keep their rows (factors, warmth, popularity, content, the item-item, transition and
SASRec models laid over); items that arrived after training get factors and popularity from the model's
content maps and count as cold items. :class:`~recsys.ranking.ranker.FeedRanker` ranks over the result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from recsys.cf.settings import CFConfig
from recsys.ranking.hybrid import HybridComponents, HybridParams
from recsys.ranking.topk import tie_order

log = logging.getLogger(__name__)

__all__ = ["FeedModelLike", "Overlay", "lay_over"]


class FeedModelLike(Protocol):
    """What the ranker reads of a fitted model (:class:`recsys.recommend.model.FeedModel` is one)."""

    item_ids: np.ndarray  # (n_items,) external ids of the model's rows
    params: HybridParams
    cfg: CFConfig
    components: HybridComponents
    version: str

    @property
    def n_items(self) -> int: ...

    def new_item_rows(self, blocks: tuple[np.ndarray, ...] | None, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(factors (n, k), pop_z (n,))`` float32 of items the model never saw, from their content blocks."""
        ...


@dataclass(frozen=True)
class Overlay:
    """The model's arrays in serving-row order.

    Attributes:
        components: the hybrid's components over the serving rows.
        priority: ``(n,)`` int64 tie-break priority per serving row (the model's evaluation order; items
            it does not know come after, in serving order).
        n_new: serving items the model does not know.
    """

    components: HybridComponents
    priority: np.ndarray
    n_new: int


def lay_over(model: FeedModelLike, ids: Sequence[str],
             new_item_blocks: Callable[[list[str]], tuple[np.ndarray, ...] | None] | None = None) -> Overlay:
    """Lay ``model`` over the serving rows ``ids`` (see :meth:`recsys.ranking.ranker.FeedRanker.build`)."""
    n = len(ids)
    model_row = {str(e): r for r, e in enumerate(model.item_ids)}
    src = np.array([model_row.get(e, -1) for e in ids], dtype=np.int64)
    known = src >= 0
    comp = model.components
    k = comp.item_factors.shape[1]
    factors = np.zeros((n, k), np.float32)
    warm = np.zeros(n, dtype=bool)
    pop = np.zeros(n, np.float32)
    factors[known] = comp.item_factors[src[known]]
    warm[known] = comp.warm[src[known]]
    pop[known] = comp.pop[src[known]]
    cold_factors = None
    if comp.cold_factors is not None:  # the cold path's own factors (HybridParams.cold_als)
        cold_factors = np.zeros((n, comp.cold_factors.shape[1]), np.float32)
        cold_factors[known] = comp.cold_factors[src[known]]
    blocks = None
    if comp.content is not None and n == model.n_items and bool((src == np.arange(n)).all()):
        # the serving rows are the model's rows: its (memory-mapped, read-only) blocks as they are, so that
        # processes serving the same model share their pages instead of each holding an (n, d) copy
        blocks = tuple(np.asarray(b) for b in comp.content)
    elif comp.content is not None:
        blocks = tuple(np.zeros((n, b.shape[1]), np.float32) for b in comp.content)
        for b, block in zip(blocks, comp.content):
            b[known] = block[src[known]]
    new = [ids[i] for i in np.flatnonzero(~known)]
    if new:
        nb = new_item_blocks(new) if new_item_blocks is not None else None
        if nb is not None and blocks is not None:
            for b, part in zip(blocks, nb):
                b[~known] = part
        f, p = model.new_item_rows(nb if blocks is not None else None, len(new))
        factors[~known], pop[~known] = f, p
        if cold_factors is not None and nb is not None and blocks is not None and comp.cold_factor_map is not None:
            cold_factors[~known] = comp.cold_factor_map(np.concatenate(nb, axis=1))
        log.info("feed ranker: %d items arrived after model %s (scored as cold items)", len(new), model.version)
    priority_model = tie_order(model.n_items)
    priority = np.empty(n, dtype=np.int64)
    priority[known] = priority_model[src[known]]
    priority[~known] = model.n_items + np.arange(int((~known).sum()))
    components = HybridComponents(factors, warm, pop, blocks, comp.bm25, 0.0,
                                  item_item=None if comp.item_item is None else comp.item_item.laid_over(src),
                                  seq=None if comp.seq is None else comp.seq.laid_over(src),
                                  sasrec=None if comp.sasrec is None else comp.sasrec.laid_over(src),
                                  cold_factors=cold_factors, cold_factor_map=comp.cold_factor_map,
                                  content_map=comp.content_map if blocks is not None else None)
    if comp.bm25 is not None and new:
        idf = np.full(n, float(np.median(comp.bm25.idf)) if comp.bm25.idf.size else 1.0, np.float32)
        idf[known] = comp.bm25.idf[src[known]]
        components = replace(components, bm25=replace(comp.bm25, idf=idf))
    return Overlay(components, priority, len(new))
