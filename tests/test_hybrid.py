"""The hybrid: histories, scoring blocks, validation carves, setting selection, cold items and fold-in."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from recsys.cf.history import History, filter_history, profile_weights, recency_weights
from recsys.cf.ridge import fit_ridge
from recsys.cf.settings import CFConfig, HybridConfig
from recsys.cf.validation import item_holdout, temporal_holdout
from recsys.ranking.hybrid import HybridParams, hybrid_scores
from recsys.ranking.scoring import (
    BlendWeights,
    HistorySimilarity,
    blend,
    content_profiles,
    kernel_scores,
    zscore_rows,
)
from recsys.recommend.components import fit_components
from recsys.recommend.hybrid import HybridRecommender
from recsys.recommend.selection import coordinate_ascent

FAST = CFConfig(
    factors=6, regularization=0.1, alpha=2.0, iterations=10,
    hybrid=HybridConfig(weight_grid=(0.0, 0.5, 2.0), recency_beta=(0.0, 10.0), recency_tau=(3.0,),
                        profile_tau=(2.0, 1000.0), cf_shrink=(0.0, 5.0), cold_offset=(0.0, -1.0),
                        cold_scale=(1.0,), rounds=1),
)


def clustered_world(
    n_users: int = 90, n_items: int = 60, n_clusters: int = 3, per_user: int = 10, noise: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Users and items in clusters; users touch items of their own cluster; content = centroid + noise.

    Returns user, item (events in time order per user), content ``(n_items, 8)``, item cluster, user cluster.
    """
    rng = np.random.default_rng(seed)
    item_cluster = np.arange(n_items) % n_clusters
    user_cluster = np.arange(n_users) % n_clusters
    centroids = rng.normal(size=(n_clusters, 8))
    content = centroids[item_cluster] + noise * rng.normal(size=(n_items, 8))
    content = (content / np.linalg.norm(content, axis=1, keepdims=True)).astype(np.float32)
    users, items = [], []
    for u in range(n_users):
        own = np.flatnonzero(item_cluster == user_cluster[u])
        picks = rng.choice(own, size=per_user, replace=False)
        users += [u] * per_user
        items += picks.tolist()
    return np.array(users), np.array(items), content, item_cluster, user_cluster


# ---------------------------------------------------------------- histories
def test_history_ranks_repeats_and_select() -> None:
    # user 0 touches 3, 1, 3 (repeat), 2 in time order; user 2 touches 0
    h = History.from_events(np.array([0, 0, 0, 0, 2]), np.array([3, 1, 3, 2, 0]), 3, 4,
                            weight=np.array([1.0, 2.0, 4.0, 1.0, 1.0]))
    assert h.counts.tolist() == [3, 0, 1]
    assert h.items[:3].tolist() == [2, 3, 1]  # newest first; item 3's newest event is the third
    assert h.rank[:3].tolist() == [0, 1, 2]
    assert h.weight[:3].tolist() == [1.0, 4.0, 2.0]  # max of repeats
    summed = History.from_events(np.array([0, 0, 0]), np.array([3, 1, 3]), 1, 4, weight=np.array([1.0, 2.0, 4.0]), combine="sum")
    assert summed.matrix().toarray().tolist() == [[0, 2.0, 0, 5.0]]
    sub = h.select(np.array([2, 0]))
    assert sub.n_users == 2 and sub.items.tolist() == [0, 2, 3, 1]
    np.testing.assert_allclose(recency_weights(h, tau=1.0, beta=2.0)[:3], [1 * 3.0, 4 * (1 + 2 * np.exp(-1)), 2 * (1 + 2 * np.exp(-2))], rtol=1e-6)
    np.testing.assert_allclose(profile_weights(h, tau=1.0)[:3], [1.0, 4 * np.exp(-1), 2 * np.exp(-2)], rtol=1e-6)
    kept = filter_history(h, h.items != 2)
    assert kept.items[:2].tolist() == [3, 1] and kept.rank[:2].tolist() == [0, 1]


def test_temporal_and_item_holdouts() -> None:
    user, item, *_ = clustered_world()
    h = History.from_events(user, item, 90, 60)
    t = temporal_holdout(h, 0.2)
    assert t.users.shape[0] == 90 and all(len(x) == 2 for x in t.targets)
    for u, targets in zip(t.users[:5], t.targets[:5]):
        newest = h.items[h.indptr[u] : h.indptr[u] + 2]
        assert sorted(targets.tolist()) == sorted(newest.tolist())
        assert not set(targets.tolist()) & set(t.train.items[t.train.indptr[u] : t.train.indptr[u + 1]].tolist())
    c = item_holdout(h, 0.2, seed=1)
    assert c.candidates is not None and c.candidates.shape[0] == 12
    assert not np.isin(c.train.items, c.candidates).any()
    assert all(np.isin(x, c.candidates).all() for x in c.targets)
    assert temporal_holdout(h, 0.2, max_users=7).users.shape[0] == 7


# ---------------------------------------------------------------- scoring blocks
def test_ridge_matches_closed_form_both_ways() -> None:
    rng = np.random.default_rng(0)
    for n, d in [(50, 5), (6, 20)]:  # primal and dual forms
        x, y = rng.normal(size=(n, d)), rng.normal(size=(n, 3))
        m = fit_ridge(x, y, l2=0.5)
        xc, yc = x - x.mean(0), y - y.mean(0)
        coef = np.linalg.solve(xc.T @ xc + 0.5 * np.eye(d), xc.T @ yc)
        np.testing.assert_allclose(m.coef, coef, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(m(x), xc @ coef + y.mean(0), rtol=1e-4, atol=1e-4)
    assert fit_ridge(rng.normal(size=(10, 2)), rng.normal(size=10), 1.0).coef.shape == (2, 1)


def test_zscore_profiles_and_blend() -> None:
    z = zscore_rows(np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]))
    np.testing.assert_allclose(z[0], [-1.2247449, 0, 1.2247449], rtol=1e-6)
    np.testing.assert_array_equal(z[1], [0, 0, 0])
    import scipy.sparse as sp

    content = np.eye(3, dtype=np.float32)
    prof = content_profiles(sp.csr_matrix(np.array([[1.0, 1.0, 0.0], [0, 0, 0]])), content)
    np.testing.assert_allclose(prof, [[2**-0.5, 2**-0.5, 0], [0, 0, 0]], rtol=1e-6)
    cf, ct, pop = np.ones((2, 3)), 2 * np.ones((2, 3)), np.array([0.0, 1.0, 2.0])
    out = blend(cf, ct, pop, BlendWeights(1.0, 0.5, 1.0), cf_scale=np.array([1.0, 0.0]))
    np.testing.assert_allclose(out, [[2, 3, 4], [1, 2, 3]])
    warm = np.array([True, False, True])
    s = hybrid_scores(cf, ct, pop, warm, HybridParams(warm_cf=1, cold_cf=0, cold_content=1, cold_offset=-5, cold_scale=2))
    np.testing.assert_allclose(s[0], [1, 2 * 2 - 5, 1])


def test_kernel_scores_against_loops() -> None:
    import scipy.sparse as sp

    rng = np.random.default_rng(2)
    content = rng.normal(size=(25, 6)).astype(np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    w = sp.csr_matrix(np.where(rng.random((4, 25)) < 0.2, rng.random((4, 25)), 0.0).astype(np.float32))
    for gamma in (0.0, 5.0, 40.0):
        expect = np.zeros((4, 25))
        for u in range(4):
            total = w[u].sum()
            for j in w[u].indices:
                cos = content @ content[j]
                expect[u] += w[u, j] / total * (np.exp(gamma * (cos - 1)) if gamma else cos)
            if gamma and w[u].nnz:
                expect[u] = 1 + np.log(expect[u]) / gamma
        np.testing.assert_allclose(kernel_scores(w, content, gamma, chunk=3), expect, rtol=1e-4, atol=1e-6)
        sim = HistorySimilarity.build(w, content)
        np.testing.assert_allclose(kernel_scores(w, content, gamma, similarity=sim), expect, rtol=1e-4, atol=1e-6)
    # a very sharp kernel tends to the largest cosine; gamma = 0 ranks like the weighted mean profile
    u0 = int(np.flatnonzero(np.diff(w.indptr))[0])
    cos = content[w[u0].indices] @ content.T
    mean = (w[u0].data[:, None] * cos).sum(0) / w[u0].data.sum()
    s40 = kernel_scores(w, content, 40.0)[u0]
    assert (s40 >= mean - 1e-5).all() and (s40 <= cos.max(axis=0) + 1e-5).all()  # Jensen: between mean and max
    with pytest.raises(ValueError, match="gamma"):
        kernel_scores(w, content, 50.0)
    prof = content_profiles(w, content) @ content.T
    for u in range(4):
        if w[u].nnz:
            np.testing.assert_array_equal(np.argsort(-kernel_scores(w, content, 0.0)[u]), np.argsort(-prof[u]))
    with pytest.raises(ValueError, match="does not cover"):
        kernel_scores(w, content, 1.0, similarity=HistorySimilarity.build(w[:1], content))


def test_coordinate_ascent_finds_separable_optimum() -> None:
    def f(p: HybridParams) -> float:
        return -((p.warm_content - 2.0) ** 2) - (p.warm_pop - 0.5) ** 2

    best, score, trace = coordinate_ascent(f, HybridParams(), {"warm_content": (0.0, 1.0, 2.0, 4.0), "warm_pop": (0.0, 0.5, 1.0)})
    assert (best.warm_content, best.warm_pop) == (2.0, 0.5) and score == 0.0 and len(trace) >= 6


# ---------------------------------------------------------------- the hybrid
def test_cold_items_are_placed_by_content() -> None:
    user, item, content, item_cluster, user_cluster = clustered_world()
    cold = np.array([0, 1, 2, 3, 4, 5])  # two per cluster, with their events removed
    keep = ~np.isin(item, cold)
    h = History.from_events(user[keep], item[keep], 90, 60)
    comp = fit_components(h, content, FAST)
    assert not comp.warm[cold].any() and comp.warm[~np.isin(np.arange(60), cold)].all()
    params = HybridParams(recency_beta=0.0, cold_cf=1.0)
    model = HybridRecommender(FAST, params).fit(h, content)
    scores = model.score(np.arange(90))[:, cold]
    best = cold[np.argmax(scores, axis=1)]
    assert (item_cluster[best] == user_cluster).mean() > 0.9  # mapped factors put cold items in the right cluster
    # without content a cold item has zero factors: no preference at all
    flat = HybridRecommender(FAST, params).fit(h, None).score(np.arange(3))[:, cold]
    assert np.ptp(flat, axis=1).max() < 1e-6


def test_fold_in_of_an_unseen_user() -> None:
    user, item, content, item_cluster, _ = clustered_world()
    h = History.from_events(user, item, 90, 60)
    model = HybridRecommender(FAST, HybridParams(recency_beta=10.0, warm_content=0.5)).fit(h, content)
    new_items = np.flatnonzero(item_cluster == 1)[:3]
    rows = History.from_events(np.zeros(3, dtype=np.int64), new_items, 1, 60)
    scores = model.score_history(rows)[0]
    scores[new_items] = -np.inf
    top = np.argsort(-scores)[:10]
    assert (item_cluster[top] == 1).all()
    # a training user scored through score() equals the same history folded in
    np.testing.assert_allclose(model.score(np.array([4])), model.score_history(h.select(np.array([4]))))


def test_selection_follows_the_signal() -> None:
    """Informative content earns content weight; the choice is reproducible; validation never sees test data."""
    user, item, content, *_ = clustered_world(per_user=4, noise=0.2, seed=3)
    h = History.from_events(user, item, 90, 60)
    first = HybridRecommender(FAST).fit(h, content)
    assert first.params is not None and first.params.warm_content > 0
    assert first.selection["temporal"]["users"] == 90 and "cold_items" in first.selection
    again = HybridRecommender(FAST).fit(h, content)
    assert again.params == first.params

    rng = np.random.default_rng(5)
    noise = rng.normal(size=content.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    dense_user, dense_item, *_ = clustered_world(per_user=15, seed=3)
    hd = History.from_events(dense_user, dense_item, 90, 60)
    noisy = HybridRecommender(FAST).fit(hd, noise)
    assert noisy.params is not None and noisy.params.warm_cf == 1.0
    assert noisy.params.warm_content <= first.params.warm_content


def test_fit_checks_content_shape() -> None:
    user, item, content, *_ = clustered_world()
    h = History.from_events(user, item, 90, 60)
    with pytest.raises(ValueError, match="content has 10 rows"):
        HybridRecommender(FAST, HybridParams()).fit(h, content[:10])
    with pytest.raises(RuntimeError, match="fit"):
        HybridRecommender(FAST).score(np.array([0]))
    assert replace(HybridParams(), warm_pop=1.0).warm == BlendWeights(1.0, 0.0, 1.0)
