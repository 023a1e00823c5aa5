"""Rank a catalogue for users with a fitted feed model (:class:`~recsys.recommend.model.FeedModel`): one
code path for the service's home feed, ``recsys export`` and the offline check.

:class:`FeedRanker` lays the model over the *serving* catalogue (:func:`recsys.ranking.overlay.lay_over`:
its rows in the service's order; items that arrived after training get factors and popularity from the
model's content maps, as cold items).
A user is a :class:`~recsys.cf.history.History` row built from their events by :func:`user_history`,
the same construction as training.

Two regimes, chosen by catalogue size (``exact_max_items``):

- **exact** (the default up to 100,000 items): every item is scored with the evaluation's own functions
  (:func:`recsys.ranking.hybrid.user_components` and :func:`~recsys.ranking.hybrid.hybrid_scores`); the top ``k``
  use the evaluation's tie order. The service therefore returns what ``recsys evaluate`` would rank for
  that user under the same model. When the content kernel is a plain cosine (``gamma = 0``) the same
  score is computed in its linear form (:attr:`FeedRanker.linear`: matrix products, catalogue means and
  deviations from Gram matrices), equal up to float rounding and much faster for batches.
- **candidates** (larger catalogues): a few hundred candidates from a ScaNN index over the unit item
  factors (the user's folded-in vector as the query), the similar-items neighbours of the user's latest
  items and the most popular items are scored with the same formula; each component is standardised with
  the exact catalogue statistics in the linear form, else with those of a fixed random sample of items.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.cf.history import History, item_tie_rank, profile_weights, recency_weights
from recsys.cf.matrix import apply_confidence
from recsys.cf.model import fold_in
from recsys.ranking.hybrid import (HybridComponents, bilinear_profiles, bilinear_raw, cf_component,
                                   cold_cf_component, hybrid_scores, normalised, user_components, uses_bilinear)
from recsys.ranking.scoring import (
    affine_stats,
    block_shares,
    kernel_one_user,
    linear_user_side,
    mix_blocks,
    unit_rows,
    z_affine,
    z_from_sample,
)
from recsys.ranking.overlay import FeedModelLike, lay_over
from recsys.ranking.topk import seen_mask, top_k_rows, top_k_rows_2d

log = logging.getLogger(__name__)

__all__ = ["FEED_POOL", "FeedModelLike", "FeedRanker", "Neighbours", "Ranking", "user_history"]

FEED_POOL = 300
"""Ranked items that diversity (MMR) and per-category caps choose from."""

Neighbours = Callable[[np.ndarray, int], np.ndarray]
"""``(catalogue rows, n) -> rows``: similar items of some items (the service's item->item index)."""


@dataclass(frozen=True)
class Ranking:
    """Ranked rows for a batch of users: ``rows`` ``(n, k)`` int64 (``-1`` pads), ``scores`` float32,
    and the standardised components of the returned rows (for the reasons shown to users)."""

    rows: np.ndarray
    scores: np.ndarray
    cf: np.ndarray
    content: np.ndarray
    pop: np.ndarray


@dataclass
class FeedRanker:
    """The model laid over the serving catalogue. Build with :meth:`build`."""

    model: FeedModelLike
    ids: tuple[str, ...]
    components: HybridComponents
    priority: np.ndarray  # (n,) tie-break priority per serving row
    tie_rank: np.ndarray  # (n,) time-tie rank per serving row (history order)
    exact_max_items: int
    sample: np.ndarray | None = None
    factor_index: object | None = None
    popular: np.ndarray | None = None
    n_new: int = 0
    use_linear: bool = True
    _spaces: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        model: FeedModelLike,
        ids: Sequence[str],
        new_item_blocks: Callable[[list[str]], tuple[np.ndarray, ...] | None] | None = None,
        *,
        exact_max_items: int = 100_000,
        sample_size: int = 20_000,
        index_config: object | None = None,
        index_builder: Callable[[np.ndarray, np.ndarray | None], object] | None = None,
    ) -> FeedRanker:
        """Align the model to the serving rows ``ids``.

        Args:
            new_item_blocks: content blocks (the model's spaces, L2-normalised, zero rows where missing)
                of items the model does not know; ``None``: such items get zero content.
            index_builder: ``(vectors, recall queries) -> index`` for the item-factor index of the candidate
                regime (the service passes one that loads or publishes a versioned index); default: built
                in memory.
        """
        ids = tuple(str(i) for i in ids)
        laid = lay_over(model, ids, new_item_blocks)
        ranker = cls(model=model, ids=ids, components=laid.components, priority=laid.priority,
                     tie_rank=item_tie_rank(np.asarray(ids, dtype=object)), exact_max_items=exact_max_items,
                     n_new=laid.n_new)
        n = len(ids)
        if n > exact_max_items:
            ranker._prepare_candidates(sample_size, index_config, index_builder)
        return ranker

    @property
    def exact(self) -> bool:
        return len(self.ids) <= self.exact_max_items

    def _prepare_candidates(self, sample_size: int, index_config: object | None,
                            index_builder: Callable[[np.ndarray, np.ndarray | None], object] | None) -> None:
        from recsys.index.factory import build_index

        n = len(self.ids)
        rng = np.random.default_rng(0)
        self.sample = np.sort(rng.choice(n, size=min(sample_size, n), replace=False))
        self.popular = np.argsort(-self.components.pop, kind="stable")[:200]
        comp = self.components
        # the sample's vectors, gathered once (per request they would be megabytes of copying)
        self._spaces["sample_factors"] = np.ascontiguousarray(comp.item_factors[self.sample])
        for b, block in enumerate(comp.content or ()):
            self._spaces[f"sample_content_{b}"] = np.ascontiguousarray(block[self.sample])
        # Candidates by the cosine of item factors to the user's vector: the index holds unit rows, so
        # ScaNN's spherical partitioning applies (a MIPS transform [f/M, sqrt(1 - |f|^2/M^2)] squeezed the
        # many small cold-item factors into one point and left the partitioner with empty leaves). The
        # candidates are rescored exactly, and the most popular items are always among them.
        unit = unit_rows(comp.item_factors)
        warm_rows = np.flatnonzero(comp.warm)
        pick = rng.choice(warm_rows, size=min(200, len(warm_rows)), replace=False) if len(warm_rows) else warm_rows
        queries = unit[pick] if len(pick) else None  # recall is checked on user-like queries
        if index_builder is not None:
            self.factor_index = index_builder(unit, queries)
        else:
            self.factor_index = build_index(unit, index_config, queries=queries)  # type: ignore[arg-type]
        if self.linear:  # exact catalogue statistics from the Gram matrices (computed once, here)
            self._space("cf", None)
            p = self.model.params
            if comp.content is not None:
                self._space("content", p.content_mix)
                self._space("content", p.cold_content_mix)

    # ------------------------------------------------------------------ scoring
    def scores(self, rows: History) -> np.ndarray:
        """Scores ``(rows.n_users, n_items)`` over the whole catalogue, the evaluation's formula exactly."""
        s, explain, _ = self._exact(rows)
        if isinstance(explain, dict):  # the linear form scores warm items first, then cold ones
            return s[:, self._order()[1]]
        return s

    def _exact(self, rows: History) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(scores, cf_z, content_z)`` over the whole catalogue (content zeros without content)."""
        if self.linear:
            s, explain = self._linear(rows)
            return s, explain, explain  # explain: a marker, components computed for the returned rows only
        p, cfg = self.model.params, self.model.cfg
        u = user_components(self.components, rows, p, cfg)
        s = hybrid_scores(u.cf, u.content, self.components.pop, self.components.warm, p, u.scale, u.cold_content, u.cold_cf)
        return s, u.cf, u.content if u.content is not None else np.zeros_like(u.cf)

    # ------------------------------------------------------------------ the linear form (gamma = 0)
    @property
    def _item_item_cf(self) -> bool:
        """Whether the CF score is not the fold-in's dot product: an item-item matrix (EASE, item-kNN, or
        transitions with a weight) or SASRec with a weight."""
        comp, p = self.components, self.model.params
        return (comp.item_item is not None or (comp.seq is not None and p.seq_weight > 0)
                or (comp.sasrec is not None and p.sasrec_weight > 0))

    @property
    def linear(self) -> bool:
        """Whether the score is linear in the item vectors: content kernels with ``gamma = 0`` (or no content).

        Then each standardised component is an affine function of a dot product, its catalogue mean and
        deviation follow from the items' mean vector and Gram matrix, and the whole blend is one matrix
        product per batch: the same scores as the general path up to float rounding, in a fraction of
        the memory traffic (what makes large exports fast).
        """
        p = self.model.params
        if self._item_item_cf:  # an item-item CF score (EASE, item-kNN, transitions), SASRec: not a dot product
            return False
        if self.components.cold_factors is not None and p.cold_als is not None and p.cold_cf:
            return False  # cold items scored with their own factors: a second fold-in, the general path
        if uses_bilinear(self.components, p):
            return False  # the learned content score joins the cold content score standardised: not affine
        return self.use_linear and (self.components.content is None or (p.profile_gamma == 0 and p.cold_profile_gamma == 0))

    def _space(self, key: str, mix: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(vectors, mean, gram)`` of the item factors (``key='cf'``) or the content mixed with ``mix``."""
        cache_key = (key, mix)
        if cache_key not in self._spaces:
            comp = self.components
            if key == "cf":
                x = comp.item_factors
            else:
                assert comp.content is not None and mix is not None
                shares = block_shares(len(comp.content), mix)
                x = comp.content[0] if len(comp.content) == 1 else mix_blocks(comp.content, shares)
            x64 = np.asarray(x, dtype=np.float64)
            self._spaces[cache_key] = (np.ascontiguousarray(x, dtype=np.float32), x64.mean(axis=0), x64.T @ x64 / len(x64))
        return self._spaces[cache_key]

    def _linear(self, rows: History) -> tuple[np.ndarray, dict]:
        p, cfg, comp = self.model.params, self.model.cfg, self.components
        fold = apply_confidence(rows.matrix(recency_weights(rows, p.recency_tau, p.recency_beta)), cfg, comp.bm25)
        uvec = fold_in(comp.item_factors, fold, cfg)
        f, f_mean, f_gram = self._space("cf", None)
        cf_m, cf_sd = affine_stats(uvec, f_mean, f_gram)
        use_content = comp.content is not None and bool(p.warm_content or p.cold_content)
        n = rows.counts.astype(np.float32)
        scale = n / (n + p.cf_shrink) if p.cf_shrink > 0 else np.ones_like(n)
        warm_w, cold_w = p.warm, p.cold
        if not use_content:
            from dataclasses import replace as dc_replace

            warm_w, cold_w = dc_replace(warm_w, content=0.0), dc_replace(cold_w, content=0.0)
        warm_w, cold_w = normalised(warm_w), normalised(cold_w)
        inv_cf = np.where(cf_sd > 0, 1.0 / np.where(cf_sd > 0, cf_sd, 1.0), 0.0)
        sides = {}
        for name, (tau, mix) in (("warm", (p.profile_tau, p.content_mix)), ("cold", (p.cold_profile_tau, p.cold_content_mix))):
            if not use_content:
                sides[name] = None
                continue
            if name == "cold" and (tau, mix) == (p.profile_tau, p.content_mix):
                sides[name] = sides["warm"]
                continue
            x, x_mean, x_gram = self._space("content", mix)
            w = rows.matrix(profile_weights(rows, tau))
            totals = np.asarray(w.sum(axis=1)).ravel()
            w = sp.diags(np.where(totals > 0, 1.0 / np.maximum(totals, 1e-30), 0.0).astype(np.float32)) @ w
            prof = np.asarray(w @ x, dtype=np.float32)
            c_m, c_sd = affine_stats(prof, x_mean, x_gram)
            sides[name] = (x, prof, c_m, np.where(c_sd > 0, 1.0 / np.where(c_sd > 0, c_sd, 1.0), 0.0))

        # One matrix product: user coefficients [warm part | cold part] against item rows that hold
        # [F_i, C_i, pop_i, 1] in the warm half (warm items) or in the cold half (cold items).
        # columns in the order warm items, then cold items (``_order``): one product per half, no scatter
        q_warm = linear_user_side(warm_w, sides["warm"], uvec, scale, inv_cf, cf_m, 1.0, 0.0)
        q_cold = linear_user_side(cold_w, sides["cold"], uvec, scale, inv_cf, cf_m, p.cold_scale, p.cold_offset)
        x_warm, x_cold = self._item_side(sides["warm"] is not None, p.content_mix, p.cold_content_mix)
        s = np.empty((uvec.shape[0], len(self.ids)), dtype=np.float32)
        n_warm = x_warm.shape[0]
        np.matmul(q_warm, x_warm.T, out=s[:, :n_warm])
        np.matmul(q_cold, x_cold.T, out=s[:, n_warm:])
        return s, {"uvec": uvec, "cf": (cf_m, inv_cf), "warm": sides["warm"], "cold": sides["cold"]}

    def _order(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(order, inverse, priority)``: the linear form's column order (warm items, then cold), its
        inverse, and the tie-break priority in that order."""
        if "order" not in self._spaces:
            warm = self.components.warm
            order = np.concatenate([np.flatnonzero(warm), np.flatnonzero(~warm)]).astype(np.int64)
            inverse = np.empty_like(order)
            inverse[order] = np.arange(len(order))
            self._spaces["order"] = (order, inverse, self.priority[order])
        return self._spaces["order"]

    def _item_side(self, with_content: bool, warm_mix: float, cold_mix: float) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``[F_i, C_i, pop_i, 1]`` of the warm items and of the cold items (content mixed for each)."""
        key = ("items", with_content, warm_mix, cold_mix)
        if key not in self._spaces:
            comp = self.components
            halves = []
            for mix, rows in ((warm_mix, np.flatnonzero(comp.warm)), (cold_mix, np.flatnonzero(~comp.warm))):
                cols = [comp.item_factors[rows]]
                if with_content:
                    cols.append(self._space("content", mix)[0][rows])
                cols += [comp.pop[rows, None], np.ones((len(rows), 1), np.float32)]
                halves.append(np.ascontiguousarray(np.concatenate(cols, axis=1), dtype=np.float32))
            self._spaces[key] = tuple(halves)
        return self._spaces[key]

    def _linear_components(self, explain: dict, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Standardised CF and content components of the rows ``(B, k)`` (for the reasons)."""
        f = self.components.item_factors
        cf_m, inv_cf = explain["cf"]
        cf = (np.einsum("uk,urk->ur", explain["uvec"], f[rows]) - cf_m[:, None]) * inv_cf[:, None]
        side = explain["warm"]
        if side is None:
            return cf.astype(np.float32), np.zeros(rows.shape, np.float32)
        x, prof, c_m, inv_c = side
        content = (np.einsum("ud,urd->ur", prof, x[rows]) - c_m[:, None]) * inv_c[:, None]
        return cf.astype(np.float32), content.astype(np.float32)

    def rank(
        self,
        rows: History,
        k: int,
        allowed: np.ndarray | None = None,
        *,
        exclude_seen: bool = True,
        pool: int | None = None,
        neighbours: Neighbours | None = None,
    ) -> Ranking:
        """Top ``k`` allowed rows per user (``pool`` > ``k``: a longer list, e.g. for diversity).

        Args:
            allowed: ``(n_items,)`` bool shared by the users, or ``(n_users, n_items)``.
            exclude_seen: leave out the items in each user's history.
        """
        want = max(k, pool or 0)
        order = None
        if self.exact:
            s, cf_z, content_z = self._exact(rows)
            comps = (cf_z, content_z)
            if isinstance(cf_z, dict):  # linear form: columns are warm items, then cold ones
                order, inverse, order_priority = self._order()
        else:
            s, cols, comps = self._candidate_scores(rows, want, neighbours)
        if allowed is not None:
            mask = np.asarray(allowed, dtype=bool)
            if order is not None:
                mask = mask[..., order]
            if self.exact and mask.ndim == 1:
                if not mask.all():
                    s[:, ~mask] = -np.inf
            else:
                mask = mask if self.exact else (mask[cols] if mask.ndim == 1 else np.take_along_axis(mask, cols, 1))
                s = np.where(mask, s, -np.inf).astype(np.float32)
        if exclude_seen and rows.items.shape[0]:
            seen = rows.matrix(np.ones_like(rows.weight))
            if self.exact:
                r_seen, c_seen = seen.nonzero()
                s[r_seen, c_seen if order is None else inverse[c_seen]] = -np.inf
            else:
                s = np.where(seen_mask(seen, cols), -np.inf, s).astype(np.float32)
        if self.exact:
            top = top_k_rows(s, want, self.priority if order is None else order_priority)
            top_s = np.take_along_axis(s, top, axis=1)
            out_rows = np.where(np.isfinite(top_s), top if order is None else order[top], -1)
        else:
            top = top_k_rows_2d(s, want, self.priority[cols])
            top_s = np.take_along_axis(s, top, axis=1)
            out_rows = np.where(np.isfinite(top_s), np.take_along_axis(cols, top, axis=1), -1)
        safe = np.maximum(out_rows, 0)
        pick = safe if self.exact else top
        if isinstance(comps[0], dict):
            cf, content = self._linear_components(comps[0], safe)
        else:
            cf = np.take_along_axis(comps[0], pick, axis=1)
            content = np.take_along_axis(comps[1], pick, axis=1)
        pop = self.components.pop[safe]
        return Ranking(out_rows, np.where(np.isfinite(top_s), top_s, np.nan).astype(np.float32), cf, content, pop)

    # ------------------------------------------------------------------ large catalogues
    def _candidate_scores(self, rows: History, want: int, neighbours: Neighbours | None
                          ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Scores over per-user candidate columns: ``(scores, cols, (cf_z, content_z))``, each ``(n, c)``."""
        assert self.sample is not None and self.popular is not None and self.factor_index is not None
        p, cfg, comp = self.model.params, self.model.cfg, self.components
        fold = apply_confidence(rows.matrix(recency_weights(rows, p.recency_tau, p.recency_beta)), cfg, comp.bm25)
        uvec = fold_in(comp.item_factors, fold, cfg)
        fetch = max(200, 2 * want)
        ids, _ = self.factor_index.search(unit_rows(uvec), fetch)  # type: ignore[attr-defined]
        cand: list[np.ndarray] = []
        for u in range(rows.n_users):
            parts = [ids[u][ids[u] >= 0], self.popular]
            mine = rows.items[rows.indptr[u] : rows.indptr[u + 1]]
            if neighbours is not None and mine.size:
                parts.append(neighbours(mine[:5], 50))
            cand.append(np.unique(np.concatenate(parts)))
        width = max(len(c) for c in cand)
        cols = np.stack([np.pad(c, (0, width - len(c)), constant_values=c[0]) for c in cand])
        dup = np.zeros(cols.shape, dtype=bool)
        for u, c in enumerate(cand):
            dup[u, len(c):] = True
        cf_raw = np.einsum("uk,uck->uc", uvec, comp.item_factors[cols])
        cold_all = cold_cf_component(comp, rows, p, cfg) if p.cold_cf else None  # item-item CF / own cold factors
        cold_cf_z = None if cold_all is None else np.take_along_axis(cold_all, cols, axis=1)
        if self._item_item_cf:  # the item-item (or SASRec) score of every item is cheap: standardise exactly
            cf_all = cf_component(comp, rows, p.recency_tau, p.recency_beta, cfg, p.seq_weight, p.seq_tau,
                                  p.sasrec_weight)
            cf_z = np.take_along_axis(cf_all, cols, axis=1)
        elif self.linear:
            _f, f_mean, f_gram = self._space("cf", None)
            cf_z = z_affine(cf_raw, *affine_stats(uvec, f_mean, f_gram))
        else:
            cf_z = z_from_sample(cf_raw, uvec @ self._spaces["sample_factors"].T)
        content_z = cold_z = None
        if comp.content is not None and (p.warm_content or p.cold_content):
            content_z = self._content_z(rows, cols, p.profile_tau, p.profile_gamma, p.content_mix)
            same = (p.cold_profile_tau, p.cold_profile_gamma, p.cold_content_mix) == (
                p.profile_tau, p.profile_gamma, p.content_mix)
            if uses_bilinear(comp, p):
                cold_z = self._cold_content_z(rows, cols)
            else:
                cold_z = content_z if same else self._content_z(rows, cols, p.cold_profile_tau, p.cold_profile_gamma,
                                                                p.cold_content_mix)
        n = rows.counts.astype(np.float32)
        scale = n / (n + p.cf_shrink) if p.cf_shrink > 0 else np.ones_like(n)
        s = np.empty(cols.shape, np.float32)
        for u in range(rows.n_users):
            s[u] = hybrid_scores(cf_z[u : u + 1], None if content_z is None else content_z[u : u + 1],
                                 comp.pop[cols[u]], comp.warm[cols[u]], p, scale[u : u + 1],
                                 None if cold_z is None else cold_z[u : u + 1],
                                 None if cold_cf_z is None else cold_cf_z[u : u + 1])[0]
        s[dup] = -np.inf
        return s, cols, (cf_z, content_z if content_z is not None else np.zeros_like(cf_z))

    def _cold_content_z(self, rows: History, cols: np.ndarray) -> np.ndarray:
        """The cold content score with the learned content score (:func:`recsys.ranking.hybrid.user_components`),
        each part and their sum standardised with the catalogue sample, as :meth:`_content_z`."""
        p, comp = self.model.params, self.components
        assert comp.content is not None and self.sample is not None
        kernel, kernel_sample = self._content_z(rows, cols, p.cold_profile_tau, p.cold_profile_gamma,
                                                p.cold_content_mix, with_sample=True)
        sample_blocks = tuple(self._spaces[f"sample_content_{b}"] for b in range(len(comp.content)))
        prof = bilinear_profiles(comp, rows)
        w = np.float32(p.cold_bilinear)
        out = np.empty(cols.shape, np.float32)
        for u in range(rows.n_users):
            raw = bilinear_raw(prof[u : u + 1], tuple(block[cols[u]] for block in comp.content))
            raw_sample = bilinear_raw(prof[u : u + 1], sample_blocks)
            total = kernel[u : u + 1] + w * z_from_sample(raw, raw_sample)
            total_sample = kernel_sample[u : u + 1] + w * z_from_sample(raw_sample, raw_sample)
            out[u] = z_from_sample(total, total_sample)[0]
        return out

    def _content_z(self, rows: History, cols: np.ndarray, tau: float, gamma: float, mix: float,
                   with_sample: bool = False) -> Any:
        """The content score of ``cols`` standardised with the catalogue sample (``with_sample``: and of
        the sample itself, as a pair; the general path only)."""
        comp = self.components
        assert comp.content is not None and self.sample is not None
        if self.linear:  # gamma = 0: cosine to the weighted mean profile, standardised exactly (Gram matrix)
            x, x_mean, x_gram = self._space("content", mix)
            w = rows.matrix(profile_weights(rows, tau))
            totals = np.asarray(w.sum(axis=1)).ravel()
            w = sp.diags(np.where(totals > 0, 1.0 / np.maximum(totals, 1e-30), 0.0).astype(np.float32)) @ w
            prof = np.asarray(w @ x, dtype=np.float32)
            raw = np.einsum("ud,ucd->uc", prof, x[cols])
            return z_affine(raw, *affine_stats(prof, x_mean, x_gram))
        shares = block_shares(len(comp.content), mix)
        weights = rows.matrix(profile_weights(rows, tau))
        out = np.empty(cols.shape, np.float32)
        out_sample = np.zeros((rows.n_users, len(self.sample)), np.float32)
        n_cols = cols.shape[1]
        for u in range(rows.n_users):
            w = weights[u]
            if not w.nnz:
                out[u] = 0.0
                continue
            sim_total = None
            for b, (share, block) in enumerate(zip(shares, comp.content)):
                if share <= 0:
                    continue
                hist = block[w.indices]
                sim = np.concatenate([hist @ block[cols[u]].T, hist @ self._spaces[f"sample_content_{b}"].T], axis=1)
                sim = np.float32(share) * sim
                sim_total = sim if sim_total is None else sim_total + sim
            raw = kernel_one_user(w.data, sim_total, gamma) if sim_total is not None else np.zeros((1, n_cols + len(self.sample)), np.float32)
            out[u] = z_from_sample(raw[:, :n_cols], raw[:, n_cols:])[0]
            if with_sample:
                out_sample[u] = z_from_sample(raw[:, n_cols:], raw[:, n_cols:])[0]
        return (out, out_sample) if with_sample else out
