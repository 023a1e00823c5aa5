"""Serving a feed under an experiment: the variant's ranker, or two variants interleaved.

Variants are ranker configurations over the loaded :class:`~recsys.serving.Runtime`: a trained hybrid (the
active model or a registered ``model_version``, with blend weight overrides and ``diversity``, optionally
reordered by the learned reranker) or popularity as a control. An A/B
experiment gives each user one variant for good (:func:`recsys.experiments.assign.assign`); an
interleaving experiment merges both variants' lists into every answer (team draft, the coin seeded by
the request id) and credits each position to the variant that placed it.

Feed experiments apply to a feed's first page (no ``cursor``); later pages are the plain feed, and
experiment answers carry no ``next_cursor``. Search experiments (:func:`serve_search_experiment`) vary the
retrieval mode; A/B needs the request's ``user_id``, interleaving merges both modes' answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from recsys.errors import ArtifactError
from recsys.experiments.assign import INTERLEAVED, assign, request_rng, team_draft
from recsys.experiments.settings import ExperimentConfig, VariantConfig
from recsys.serving.feed import user_events
from recsys.serving.state import allowed_mask, ranked_item
from recsys.serving.variant_models import VariantRankers


@dataclass(frozen=True)
class ServedList:
    """An experiment's answer: the items (runtime ``RankedItem``s) and what to log with them."""

    items: list[Any]
    cold_start: bool
    experiment: str
    variant: str
    teams: list[str] | None = None
    model_version: str | None = None
    """The feed model version(s) that ranked the list: the variant's (``None`` for the popularity control);
    interleaved lists of two models name both, ``a+b``."""


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
                  category: str | None = None, exclude: Sequence[str] = (), reranker: Any = None,
                  rankers: VariantRankers | None = None) -> tuple[list[Any], str | None]:
    """One variant's list for the user and the feed model version that ranked it (``reranker``: the
    process's ``RerankerSlot``, for variants using it; ``rankers``: the process's variant models, needed by
    variants with a ``model_version`` or ``weights``)."""
    if variant.ranker == "popularity":
        return popular_items(rt, user_id, k, exclude_seen=exclude_seen, category=category, exclude=exclude), None
    st = rt._st()
    custom = variant.model_version is not None or bool(variant.weights)
    if custom and rankers is None:
        raise ArtifactError(f"variant {variant.name!r} names a model version or weights and this process "
                            "serves none but the active model")
    fr = rankers.ranker(st, variant) if custom and rankers is not None else None
    version = fr.model.version if fr is not None else st.feed_version
    if variant.reranker:
        from recsys.serving.reranking import reranked_items

        return reranked_items(rt, user_id, k, slot=reranker, exclude_seen=exclude_seen, category=category,
                              exclude=exclude, ranker=fr), version
    return list(rt.recommend(user_id, k=k, exclude_seen=exclude_seen, category=category, exclude=exclude,
                             diversity=variant.diversity, ranker=fr).items), version


def serve_experiment(rt: Any, experiment: ExperimentConfig, user_id: str, request_id: str, k: int, *,
                     exclude_seen: bool = True, category: str | None = None, exclude: Sequence[str] = (),
                     reranker: Any = None, rankers: VariantRankers | None = None) -> ServedList:
    """The user's list under ``experiment`` (A/B: their variant; interleaving: both, team draft)."""
    opts: dict[str, Any] = {"exclude_seen": exclude_seen, "category": category, "exclude": exclude,
                            "reranker": reranker, "rankers": rankers}
    cold = len(user_rows(rt, user_id)) == 0
    if experiment.mode == "ab":
        v = assign(experiment, user_id)
        items, version = variant_items(rt, v, user_id, k, **opts)
        return ServedList(items, cold, experiment.name, v.name, model_version=version)
    va, vb = experiment.variants
    la, ver_a = variant_items(rt, va, user_id, k, **opts)
    lb, ver_b = variant_items(rt, vb, user_id, k, **opts)
    by_id = {it.id: it for it in (*lb, *la)}
    merged, teams = team_draft([i.id for i in la], [i.id for i in lb], k, request_rng(request_id),
                               teams=(va.name, vb.name))
    versions = list(dict.fromkeys(v for v in (ver_a, ver_b) if v is not None))
    return ServedList([by_id[i] for i in merged], cold, experiment.name, INTERLEAVED, teams,
                      model_version="+".join(versions) or None)


def serve_search_experiment(rt: Any, experiment: ExperimentConfig, user_id: str | None, request_id: str,
                            query: dict[str, Any]) -> tuple[Any, ServedList]:
    """A search answer under ``experiment`` (surface ``search``): the user's variant's mode (A/B; needs a
    ``user_id``), or both variants' answers interleaved (team draft). ``query``: ``Runtime.search``'s
    keywords but ``mode``. Returns the answer (facets and the understood query of the first variant's
    answer, the merged items) and what to log."""
    if experiment.mode == "ab":
        if user_id is None:
            raise ValueError("an A/B search experiment assigns by user_id")
        v = assign(experiment, user_id)
        found = rt.search(user_id=user_id, mode=v.search_mode, **query)
        return found, ServedList(list(found.items), False, experiment.name, v.name,
                                 model_version=rt.versions().get("model"))
    va, vb = experiment.variants
    fa = rt.search(user_id=user_id, mode=va.search_mode, **query)
    fb = rt.search(user_id=user_id, mode=vb.search_mode, **query)
    by_id = {it.id: it for it in (*fb.items, *fa.items)}
    merged, teams = team_draft([i.id for i in fa.items], [i.id for i in fb.items], query["k"],
                               request_rng(request_id), teams=(va.name, vb.name))
    items = [by_id[i] for i in merged]
    modes = list(dict.fromkeys((fa.mode, fb.mode)))
    answer = replace(fa, items=items, mode="+".join(modes), degraded=fa.degraded or fb.degraded)
    return answer, ServedList(items, False, experiment.name, INTERLEAVED, teams,
                              model_version=rt.versions().get("model"))
