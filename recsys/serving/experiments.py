"""Serving a feed under an experiment: the variant's ranker, or two variants interleaved.

Variants are ranker configurations over the loaded :class:`~recsys.serving.Runtime`: the trained hybrid
(with its ``diversity``, optionally reordered by the learned reranker) or popularity as a control. An A/B
experiment gives each user one variant for good (:func:`recsys.experiments.assign.assign`); an
interleaving experiment merges both variants' lists into every answer (team draft, the coin seeded by
the request id) and credits each position to the variant that placed it.

Experiments apply to a feed's first page (no ``cursor``); later pages are the plain feed, and experiment
answers carry no ``next_cursor``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from recsys.experiments.assign import INTERLEAVED, assign, request_rng, team_draft
from recsys.experiments.settings import ExperimentConfig, VariantConfig
from recsys.serving.feed import user_events
from recsys.serving.state import allowed_mask, ranked_item


@dataclass(frozen=True)
class ServedList:
    """An experiment's answer: the items (runtime ``RankedItem``s) and what to log with them."""

    items: list[Any]
    cold_start: bool
    experiment: str
    variant: str
    teams: list[str] | None = None


def user_rows(rt: Any, user_id: str) -> np.ndarray:
    """Catalogue rows of the user's items (the feed's history), ``(n,)`` int64."""
    rows, _ts, _w = user_events(rt.engine, rt.config, rt._st(), user_id)
    return rows


def popular_items(rt: Any, user_id: str, k: int, *, exclude_seen: bool = True, category: str | None = None,
                  exclude: Sequence[str] = ()) -> list[Any]:
    """The ``k`` most popular allowed items (distinct users), leaving out the user's items: the control."""
    st = rt._st()
    allowed = allowed_mask(st, category, exclude, True)
    if exclude_seen:
        seen = user_rows(rt, user_id)
        allowed[seen] = False
    scores = np.where(allowed, st.popularity_raw, -np.inf)
    top = np.argsort(-scores, kind="stable")[:k]
    return [ranked_item(st, int(r), float(scores[r]), [{"type": "popular"}]) for r in top if np.isfinite(scores[r])]


def variant_items(rt: Any, variant: VariantConfig, user_id: str, k: int, *, exclude_seen: bool = True,
                  category: str | None = None, exclude: Sequence[str] = (), reranker: Any = None) -> list[Any]:
    """One variant's list for the user (``reranker``: the process's ``RerankerSlot``, for variants using it)."""
    if variant.ranker == "popularity":
        return popular_items(rt, user_id, k, exclude_seen=exclude_seen, category=category, exclude=exclude)
    if variant.reranker:
        from recsys.serving.reranking import reranked_items

        return reranked_items(rt, user_id, k, slot=reranker, exclude_seen=exclude_seen, category=category,
                              exclude=exclude, diversity=variant.diversity)
    return list(rt.recommend(user_id, k=k, exclude_seen=exclude_seen, category=category, exclude=exclude,
                             diversity=variant.diversity).items)


def serve_experiment(rt: Any, experiment: ExperimentConfig, user_id: str, request_id: str, k: int, *,
                     exclude_seen: bool = True, category: str | None = None, exclude: Sequence[str] = (),
                     reranker: Any = None) -> ServedList:
    """The user's list under ``experiment`` (A/B: their variant; interleaving: both, team draft)."""
    opts: dict[str, Any] = {"exclude_seen": exclude_seen, "category": category, "exclude": exclude,
                            "reranker": reranker}
    cold = len(user_rows(rt, user_id)) == 0
    if experiment.mode == "ab":
        v = assign(experiment, user_id)
        return ServedList(variant_items(rt, v, user_id, k, **opts), cold, experiment.name, v.name)
    va, vb = experiment.variants
    la = variant_items(rt, va, user_id, k, **opts)
    lb = variant_items(rt, vb, user_id, k, **opts)
    by_id = {it.id: it for it in (*lb, *la)}
    merged, teams = team_draft([i.id for i in la], [i.id for i in lb], k, request_rng(request_id),
                               teams=(va.name, vb.name))
    return ServedList([by_id[i] for i in merged], cold, experiment.name, INTERLEAVED, teams)
