"""The hybrid score: CF, content and popularity in one score, for warm and cold users and items.

Design (what one fitted model does):

- **CF.** ALS (or BPR) item factors from the training matrix. Items without events (new/cold items) get
  factors from a ridge map *content embedding -> CF item factor*, fitted on the items that have events,
  so they can be scored against any user vector at once.
- **Or an item-item CF score.** With ``cf.component`` ``ease`` or ``itemknn`` (chosen per catalogue on
  validation by :mod:`recsys.recommend.tuning`) the CF score is the recency-weighted history row times an
  item-item matrix (:class:`~recsys.cf.itemitem.ItemItem`); the ALS factors are still fitted for items
  without events and the similar-items / candidate indexes: an item-item score gives every item without
  events the same value, so with content those items are scored with the folded-in user vector against
  their content-mapped ALS factors instead (:func:`cold_cf_component`), as when ALS is the CF component.
  The ALS settings of those mapped factors are chosen on the cold-items carve (``cold_als_*``): when they
  differ from the warm ones (a linear map from content reproduces smoother factors better), a second,
  small ALS fit gives the cold path its own factors (``HybridComponents.cold_factors``).
  Item-to-next-item transitions
  (:mod:`recsys.cf.sequence`) can be added to the CF score with ``seq_weight``, and the next-item scores
  of a small SASRec-style transformer over the user's newest items (:mod:`recsys.cf.sasrec`) with
  ``sasrec_weight``.
- **Users are folded in** (implicit's ``recalculate_user``, the ALS least-squares solve against fixed
  item factors) from their history with recency weights ``1 + beta * exp(-rank / tau)`` (rank = how many
  distinct items the user touched since). The same path serves users unseen at training time.
- **Content profile.** The user's items weighted by ``exp(-rank / tau_p)``; the content score of an item
  is a soft nearest-neighbour similarity to them, ``1 + log(sum_j w_j exp(gamma * (cos_j - 1))) / gamma``
  (``gamma = 0``: the cosine to the weighted mean profile; a larger ``gamma`` lets the nearest history
  items count most; see :func:`~recsys.ranking.scoring.kernel_scores`). Content may come in two blocks
  (text, image) whose shares in the cosine are a setting too. Cold items have their own ``tau_p``, ``gamma`` and
  share. For users with few events the CF weight is scaled by ``n / (n + cf_shrink)``, so a sparse user
  leans on their content profile.
- **Learned content score (cold items).** The cosine only says which items *look* alike. A bilinear map
  ``W`` fitted on the warm items' events (:func:`bilinear_component`) scores an item by what its content
  predicts about who takes it: ``(sum of the user's item vectors) W (item vector)``. It joins the cold
  content score with the weight ``cold_bilinear`` (chosen on the item hold-out carves; 0: off).
- **Popularity.** ``log(1 + users)`` per item; for items without events, a ridge prediction from content.
- **Score** = ``w_cf * z(cf) + w_content * z(content) + w_pop * z(pop)``, each component standardised per
  user over the catalogue and the weights scaled to sum to 1; items without events use their own
  weights (``cold_*``), times a scale, plus an offset (in units of one standard deviation).

The settings (recency, profile constant and kernel, block shares, weights, shrinkage, offset) are chosen
at fit time on validation splits carved from the training history only (:mod:`recsys.cf.validation`): a
temporal hold-out of each user's newest items for the warm weights, then a hold-out of random items for
the cold weights, then the temporal hold-out again for the cold offset. The search is a coordinate ascent
over the grids of ``cf.hybrid`` (:mod:`recsys.recommend.selection`). The same procedure runs on every data
set; only its outcome differs (MovieLens leans on CF, H&M on content).

This module holds the settings (:class:`HybridParams`), the fitted item side (:class:`HybridComponents`)
and the user side of the score; fitting lives in :mod:`recsys.recommend.hybrid`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from recsys.cf.history import History, profile_weights, recency_weights
from recsys.cf.itemitem import ItemItem
from recsys.cf.matrix import Bm25Stats, apply_confidence
from recsys.cf.model import fold_in
from recsys.cf.ridge import RidgeMap
from recsys.cf.sasrec import SasrecModel
from recsys.cf.settings import CFConfig
from recsys.ranking.scoring import (
    BlendWeights,
    BlockSimilarity,
    blend,
    block_shares,
    kernel_scores,
    mix_blocks,
    zscore_rows,
)

__all__ = [
    "HybridComponents",
    "HybridParams",
    "UserComponents",
    "cf_component",
    "cf_scale",
    "cold_als_config",
    "cold_cf_component",
    "content_component",
    "hybrid_scores",
    "normalised",
    "bilinear_component",
    "bilinear_input",
    "bilinear_profiles",
    "bilinear_raw",
    "sasrec_component",
    "uses_bilinear",
    "seq_component",
    "with_sequence",
    "user_components",
]


@dataclass(frozen=True)
class HybridParams:
    """Every setting of the hybrid score (see the module docstring)."""

    recency_tau: float = 10.0
    recency_beta: float = 0.0
    profile_tau: float = 1000.0
    profile_gamma: float = 0.0
    content_mix: float = 0.0
    cold_profile_tau: float = 1000.0
    cold_profile_gamma: float = 0.0
    cold_content_mix: float = 0.0
    cf_shrink: float = 0.0
    warm_cf: float = 1.0
    warm_content: float = 0.0
    warm_pop: float = 0.0
    cold_cf: float = 1.0
    cold_content: float = 0.0
    cold_pop: float = 0.0
    cold_offset: float = 0.0
    cold_scale: float = 1.0
    seq_weight: float = 0.0
    seq_tau: float = 1.0
    sasrec_weight: float = 0.0
    """Weight of the SASRec next-item score inside the CF score (0: off)."""
    sasrec_epochs: float = 0.0
    """Epochs of the SASRec fit (chosen on the temporal carve; the final fit runs as many); 0: not trained."""
    cold_als_factors: float = 0.0
    """ALS settings of the cold path's own factors (:func:`cold_als_config`); 0 factors: the warm factors."""
    cold_als_regularization: float = 0.0
    cold_als_alpha: float = 0.0
    cold_bilinear: float = 0.0
    """Weight of the learned content score (:func:`bilinear_component`) inside the cold content score (0: off)."""

    @property
    def cold_als(self) -> tuple[int, float, float] | None:
        """``(factors, regularization, alpha)`` of the cold path's own ALS factors, or ``None`` (the warm ones)."""
        if self.cold_als_factors <= 0:
            return None
        return int(self.cold_als_factors), float(self.cold_als_regularization), float(self.cold_als_alpha)

    @property
    def warm(self) -> BlendWeights:
        return BlendWeights(self.warm_cf, self.warm_content, self.warm_pop)

    @property
    def cold(self) -> BlendWeights:
        return BlendWeights(self.cold_cf, self.cold_content, self.cold_pop)


@dataclass(frozen=True)
class HybridComponents:
    """The item side of a fitted hybrid.

    Attributes:
        item_factors: ``(n_items, k)`` float32: CF factors for items with events, mapped from content for
            the others (zeros when there is no content).
        warm: ``(n_items,)`` bool, items with at least one training event.
        pop: ``(n_items,)`` float32 standardised popularity (predicted from content where not warm).
        content: one or two blocks of ``(n_items, d_b)`` float32 L2-normalised item vectors (e.g. text
            and image; zero rows where an item lacks that part), or ``None``.
        bm25: BM25 statistics for weighing new rows (``confidence == "bm25"`` only).
        fit_seconds: time of the factorisation alone.
        factor_map, pop_map: the content -> CF factor and content -> log popularity ridge maps fitted on
            the warm items (``None`` without content or warm items); they place items without events.
        pop_mean, pop_std: what standardised the log popularity into ``pop``.
        item_item: the CF score's item-item component (EASE, item-kNN; ``cf.component``), or ``None``
            when the CF score is the folded-in user vector against ``item_factors`` (ALS / BPR).
        seq: item-to-next-item transitions (:mod:`recsys.cf.sequence`), added to the CF score with the
            weight ``HybridParams.seq_weight``; ``None`` when ``cf.sequence`` is off.
        cold_factors: ``(n_items, k_c)`` float32 factors of a second ALS fit with the cold path's own
            settings (``HybridParams.cold_als``), mapped from content for items without events; they score
            the items without events (:func:`cold_cf_component`). ``None``: the cold path uses ``item_factors``.
        cold_factor_map: the content -> ``cold_factors`` ridge map (for items that arrive later).
        sasrec: the SASRec sequence model (:mod:`recsys.cf.sasrec`), added to the CF score with the weight
            ``HybridParams.sasrec_weight``; ``None`` when not trained (weight 0, disabled or out of budget).
        content_map: ``(d, d)`` float32 bilinear map of the learned content score (:func:`bilinear_component`;
            ``d`` the width of :func:`bilinear_input`), fitted on the warm items' events; ``None``: not fitted.
    """

    item_factors: np.ndarray
    warm: np.ndarray
    pop: np.ndarray
    content: tuple[np.ndarray, ...] | None
    bm25: Bm25Stats | None
    fit_seconds: float
    factor_map: RidgeMap | None = None
    pop_map: RidgeMap | None = None
    pop_mean: float = 0.0
    pop_std: float = 1.0
    item_item: ItemItem | None = None
    seq: ItemItem | None = None
    cold_factors: np.ndarray | None = None
    cold_factor_map: RidgeMap | None = None
    sasrec: SasrecModel | None = None
    content_map: np.ndarray | None = None


def cold_als_config(cfg: CFConfig, settings: tuple[int, float, float]) -> CFConfig:
    """``cfg`` with the ALS settings ``(factors, regularization, alpha)`` of the cold path's factors."""
    factors, reg, alpha = settings
    return cfg.model_copy(update={"factors": int(factors), "regularization": float(reg), "alpha": float(alpha)})


def content_component(
    comp: HybridComponents,
    rows: History,
    tau: float,
    gamma: float,
    mix: float = 0.0,
    similarity: BlockSimilarity | None = None,
) -> np.ndarray | None:
    """Standardised content scores ``(rows.n_users, n_items)`` for one profile setting (``None`` without content).

    Args:
        mix: share of the second content block in the cosine (ignored with one block).
        similarity: precomputed per-block cosines of the rows' history items (reused across settings).
    """
    if comp.content is None:
        return None
    weights = rows.matrix(profile_weights(rows, tau))
    if similarity is not None:
        return zscore_rows(kernel_scores(weights, comp.content[0], gamma, similarity=similarity.mixed(mix)))
    mixed = mix_blocks(comp.content, block_shares(len(comp.content), mix))
    return zscore_rows(kernel_scores(weights, mixed, gamma))


def cf_component(comp: HybridComponents, rows: History, tau: float, beta: float, cfg: CFConfig,
                 seq_weight: float = 0.0, seq_tau: float = 1.0, sasrec_weight: float = 0.0) -> np.ndarray:
    """Standardised CF scores ``(rows.n_users, n_items)`` of users folded in with recency weights (an
    item-item component scores the recency-weighted history rows directly), plus ``seq_weight`` times the
    standardised transition score (:func:`seq_component`), standardised again, plus ``sasrec_weight``
    times the standardised SASRec score (:func:`sasrec_component`), standardised again."""
    if comp.item_item is not None:
        cf = zscore_rows(comp.item_item.scores(rows.matrix(recency_weights(rows, tau, beta))))
    else:
        fold = apply_confidence(rows.matrix(recency_weights(rows, tau, beta)), cfg, comp.bm25)
        user_vectors = fold_in(comp.item_factors, fold, cfg)
        cf = zscore_rows(user_vectors @ comp.item_factors.T)
    if seq_weight > 0 and comp.seq is not None:
        cf = with_sequence(cf, seq_component(comp, rows, seq_tau), seq_weight)
    if sasrec_weight > 0 and comp.sasrec is not None:
        cf = with_sequence(cf, sasrec_component(comp, rows), sasrec_weight)
    return cf


def cold_cf_component(comp: HybridComponents, rows: History, params: HybridParams, cfg: CFConfig) -> np.ndarray | None:
    """Standardised factor scores ``(rows.n_users, n_items)`` for the items without events, or ``None``
    when the CF score covers them already.

    The recency-weighted fold-in (``params.recency_tau``, ``recency_beta``) against content-mapped ALS
    factors, standardised over the catalogue: the cold path's own factors when it has them
    (``comp.cold_factors``, fold-in with ``params.cold_als``), else the item factors when the CF component
    is item-item (EASE, item-kNN give every item without events the same score). ``None`` for the ALS
    component without own cold factors (its CF score is this score), without content (no mapped factors:
    zeros) or when every item has events.
    """
    if comp.content is None or comp.warm.all():
        return None
    factors = comp.item_factors
    if comp.cold_factors is not None and params.cold_als is not None:
        factors, cfg = comp.cold_factors, cold_als_config(cfg, params.cold_als)
    elif comp.item_item is None:
        return None
    fold = apply_confidence(rows.matrix(recency_weights(rows, params.recency_tau, params.recency_beta)), cfg, comp.bm25)
    return zscore_rows(fold_in(factors, fold, cfg) @ factors.T)


def seq_component(comp: HybridComponents, rows: History, tau: float) -> np.ndarray:
    """Standardised transition scores ``(rows.n_users, n_items)``: recent items vote for their successors."""
    assert comp.seq is not None
    return zscore_rows(comp.seq.scores(rows.matrix(profile_weights(rows, tau))))


def sasrec_component(comp: HybridComponents, rows: History) -> np.ndarray:
    """Standardised SASRec next-item scores ``(rows.n_users, n_items)`` from the users' newest items."""
    assert comp.sasrec is not None
    return zscore_rows(comp.sasrec.scores(rows))


def bilinear_input(blocks: tuple[np.ndarray, ...]) -> np.ndarray:
    """The item side of the learned content score: the blocks side by side, each with an equal share
    (:func:`~recsys.ranking.scoring.mix_blocks`), ``(n_items, d)`` float32."""
    return mix_blocks(blocks, block_shares(len(blocks), 0.5))


def bilinear_profiles(comp: HybridComponents, rows: History) -> np.ndarray:
    """The user side of the learned content score: each user's history vectors summed with their event
    weights, through the map (``(rows.n_users, d)`` float32; zeros without history). Reads the rows of the
    history items only."""
    assert comp.content is not None and comp.content_map is not None
    m = rows.matrix()
    used = np.unique(m.indices)
    x_used = bilinear_input(tuple(b[used] for b in comp.content))
    prof = np.asarray(m[:, used] @ x_used, dtype=np.float32)
    return prof @ comp.content_map


def bilinear_raw(profiles: np.ndarray, blocks: tuple[np.ndarray, ...]) -> np.ndarray:
    """``profiles @ bilinear_input(blocks).T`` block by block, without the ``(n_items, d)`` copy."""
    out = np.zeros((profiles.shape[0], blocks[0].shape[0]), np.float32)
    start = 0
    for block, share in zip(blocks, block_shares(len(blocks), 0.5)):
        width = block.shape[1]
        if share > 0:
            out += np.float32(np.sqrt(share)) * (profiles[:, start : start + width] @ np.asarray(block).T)
            start += width
    return out


def bilinear_component(comp: HybridComponents, rows: History) -> np.ndarray:
    """Standardised learned content scores ``(rows.n_users, n_items)``: ``(sum_j w_uj x_j) W x_i``.

    Where the content kernel compares items by the encoders' cosine, ``W`` (``comp.content_map``) is
    learnt from the events (:func:`recsys.recommend.components.fit_content_map`): which content the
    items a user took predict in the other items they took, so a new item is scored by what its text and
    picture say about who takes it (a bilinear regression, as in pairwise preference regression for cold
    start), not only by its resemblance to the user's items."""
    assert comp.content is not None
    return zscore_rows(bilinear_raw(bilinear_profiles(comp, rows), comp.content))


def with_sequence(cf: np.ndarray, seq: np.ndarray, weight: float) -> np.ndarray:
    """``z(cf + weight * seq)`` of two standardised ``(n_users, n_items)`` scores (also how the learned
    content score joins the cold content score)."""
    return zscore_rows(cf + np.float32(weight) * seq)


def cf_scale(rows: History, shrink: float) -> np.ndarray:
    """Per-user factor ``n / (n + shrink)`` on the CF weight, ``(rows.n_users,)`` float32."""
    n = rows.counts.astype(np.float32)
    return n / (n + shrink) if shrink > 0 else np.ones_like(n)


@dataclass(frozen=True)
class UserComponents:
    """The user side of the score for a batch of users (every array ``(n_users, n_items)`` but ``scale``).

    ``cold_cf``: the CF score of items without events when it differs from ``cf`` (:func:`cold_cf_component`).
    """

    cf: np.ndarray
    content: np.ndarray | None
    cold_content: np.ndarray | None
    scale: np.ndarray
    cold_cf: np.ndarray | None = None


def user_components(comp: HybridComponents, rows: History, params: HybridParams, cfg: CFConfig) -> UserComponents:
    """CF, warm-item content and cold-item content scores of some users, and their CF-weight scale."""
    cf = cf_component(comp, rows, params.recency_tau, params.recency_beta, cfg, params.seq_weight, params.seq_tau,
                      params.sasrec_weight)
    cold_cf = cold_cf_component(comp, rows, params, cfg) if params.cold_cf else None
    if comp.content is None or not (params.warm_content or params.cold_content):
        return UserComponents(cf, None, None, cf_scale(rows, params.cf_shrink), cold_cf)
    warm_key = (params.profile_tau, params.profile_gamma, params.content_mix)
    cold_key = (params.cold_profile_tau, params.cold_profile_gamma, params.cold_content_mix)
    need_cold = cold_key != warm_key and not comp.warm.all()
    sim = BlockSimilarity.build(rows.matrix(), comp.content) if need_cold else None
    content = content_component(comp, rows, *warm_key, similarity=sim)
    cold_content = content_component(comp, rows, *cold_key, similarity=sim) if need_cold else content
    if uses_bilinear(comp, params) and cold_content is not None:
        cold_content = with_sequence(cold_content, bilinear_component(comp, rows), params.cold_bilinear)
    return UserComponents(cf, content, cold_content, cf_scale(rows, params.cf_shrink), cold_cf)


def uses_bilinear(comp: HybridComponents, params: HybridParams) -> bool:
    """Whether the cold content score includes the learned content score (weight, map and cold items)."""
    return bool(params.cold_bilinear > 0 and params.cold_content > 0 and comp.content_map is not None
                and comp.content is not None and not comp.warm.all())


def hybrid_scores(
    cf: np.ndarray | None,
    content: np.ndarray | None,
    pop: np.ndarray,
    warm: np.ndarray,
    params: HybridParams,
    cf_scale: np.ndarray | None = None,
    cold_content: np.ndarray | None = None,
    cold_cf: np.ndarray | None = None,
) -> np.ndarray:
    """The blended score ``(n_users, n_items)`` float32: warm weights on warm items, cold ones elsewhere.

    ``cold_content`` (default: ``content``) and ``cold_cf`` (default: ``cf``) are the content and CF scores
    used for items without events.
    """
    if content is None:
        params = _without_content(params)
    out = blend(cf, content, pop, normalised(params.warm), cf_scale)
    if (~warm).any():
        cold_c = content if cold_content is None else cold_content
        cold_f = cf if cold_cf is None else cold_cf
        cold = np.float32(params.cold_scale) * blend(cold_f, cold_c, pop, normalised(params.cold), cf_scale)
        cold += np.float32(params.cold_offset)
        out = np.where(warm[None, :], out, cold)
    return out


def normalised(w: BlendWeights) -> BlendWeights:
    """Weights scaled to sum to 1 (when they sum to more than 0): only their ratios matter, and the
    blended score stays on the scale of one standardised component, where ``cold_offset`` is measured."""
    total = w.cf + w.content + w.pop
    return w if total <= 0 else BlendWeights(w.cf / total, w.content / total, w.pop / total)


def _without_content(params: HybridParams) -> HybridParams:
    return replace(params, warm_content=0.0, cold_content=0.0)
