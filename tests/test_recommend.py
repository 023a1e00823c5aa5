"""The feed ranker: its top-k order, the large-catalogue candidate path, artifacts and new items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.cf.history import History
from recsys.cf.settings import CFConfig
from recsys.ranking.hybrid import HybridParams
from recsys.ranking.metrics import rank_top_k
from recsys.cf.history import user_history
from recsys.ranking.ranker import FeedRanker
from recsys.ranking.topk import top_k_rows
from recsys.recommend.hybrid import HybridRecommender
from recsys.recommend.model import FeedModel

PARAMS = HybridParams(recency_tau=3.0, recency_beta=10.0, profile_tau=3.0, profile_gamma=10.0, content_mix=0.25,
                      cold_profile_gamma=0.0, warm_cf=1.0, warm_content=0.5, warm_pop=0.25, cold_cf=1.0,
                      cold_content=2.0, cold_pop=0.1, cold_offset=-0.5, cold_scale=1.5, cf_shrink=5.0)


def _model(n_users: int = 60, n_items: int = 300, seed: int = 0) -> tuple[FeedModel, History]:
    rng = np.random.default_rng(seed)
    user = rng.integers(0, n_users, 2000)
    item = (rng.zipf(1.3, 2000) % (n_items - 40)).astype(np.int64)  # the last 40 items never get events
    order = np.lexsort((np.arange(2000), user))
    history = History.from_events(user[order], item[order], n_users, n_items)
    text = rng.normal(size=(n_items, 12)).astype(np.float32)
    image = rng.normal(size=(n_items, 8)).astype(np.float32)
    blocks = tuple(b / np.linalg.norm(b, axis=1, keepdims=True) for b in (text, image))
    cfg = CFConfig(factors=8, iterations=3)
    rec = HybridRecommender(cfg, PARAMS).fit(history, blocks)
    from recsys.cf.ridge import fit_ridge

    x = np.concatenate(blocks, axis=1)
    warm = rec.components.warm
    model = FeedModel(
        item_ids=np.array([f"i{j}" for j in range(n_items)], dtype=object), params=PARAMS, cfg=cfg,
        components=rec.components, factor_map=fit_ridge(x[warm], rec.components.item_factors[warm], 10.0),
        pop_map=fit_ridge(x[warm], np.log1p(history.item_counts()[warm]), 10.0), pop_mean=0.0, pop_std=1.0,
        encoders={"text": "t", "image": "i"}, version="v1",
    )
    return model, history


def test_top_k_rows_matches_the_evaluation_ranking_with_ties() -> None:
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, size=(40, 50)).astype(np.float32)  # many ties
    scores[rng.random(scores.shape) < 0.1] = -np.inf
    prio = rng.permutation(50)
    for k in (1, 5, 10, 50):
        assert np.array_equal(top_k_rows(scores, k, prio), rank_top_k(scores, k, tie_order=prio))


def test_exact_ranking_is_the_hybrid_score(tmp_path: Path) -> None:
    model, history = _model()
    model.save(tmp_path / "m")
    loaded = FeedModel.load(tmp_path / "m")
    assert loaded.params == PARAMS and np.array_equal(loaded.item_ids, model.item_ids)
    ranker = FeedRanker.build(loaded, list(loaded.item_ids))
    users = np.arange(10)
    expected = HybridRecommender(model.cfg, PARAMS, model.components, history).score(users)
    got = ranker.scores(history.select(users))
    assert np.allclose(got, expected, atol=1e-5)
    ranking = ranker.rank(history.select(users), 10)
    ref = rank_top_k(expected, 10, history.matrix()[users], tie_order=ranker.priority)
    assert np.array_equal(ranking.rows, ref)


def test_candidate_path_scores_like_the_exact_path_when_it_sees_everything() -> None:
    """With the item sample = the whole catalogue and candidates covering it, the candidate formula must
    give the exact scores: it re-implements the standardisation on a column subset."""
    model, history = _model(n_items=150)
    exact = FeedRanker.build(model, list(model.item_ids))
    approx = FeedRanker.build(model, list(model.item_ids), exact_max_items=10, sample_size=10_000)
    assert not approx.exact and approx.sample is not None and len(approx.sample) == 150
    rows = history.select(np.arange(8))
    a = exact.rank(rows, 15)
    b = approx.rank(rows, 15)
    assert np.array_equal(a.rows, b.rows)
    assert np.allclose(a.scores, b.scores, atol=1e-4)


def test_items_added_after_training_are_scored_as_cold_items() -> None:
    model, history = _model()
    ids = [*model.item_ids, "late-1", "late-2"]
    block_dims = [b.shape[1] for b in model.components.content]
    late = tuple(np.ones((2, d), np.float32) / np.sqrt(d) for d in block_dims)
    ranker = FeedRanker.build(model, ids, lambda new: late if new == ["late-1", "late-2"] else None)
    assert ranker.n_new == 2 and not ranker.components.warm[-2:].any()
    x = np.concatenate(late, axis=1)
    assert np.allclose(ranker.components.item_factors[-2:], model.factor_map(x), atol=1e-5)
    assert ranker.priority[-1] == model.n_items + 1
    s = ranker.scores(history.select(np.arange(3)))
    assert s.shape == (3, len(ids)) and np.isfinite(s).all()


def test_user_history_orders_by_time_then_tie_rank_and_keeps_the_strongest_weight() -> None:
    tie = np.array([2, 0, 1])
    h = user_history([np.array([0, 1, 2, 0])], [np.array([5, 5, 5, 1])], [np.array([1, 1, 1, 4], np.float32)], tie, 3)
    # time 1: item 0 (w 4); time 5: items in tie order 1, 2, 0 -> newest first: 0, 2, 1
    assert h.items.tolist() == [0, 2, 1] and h.rank.tolist() == [0, 1, 2]
    assert h.weight.tolist() == [4, 1, 1]


def test_a_broken_artifact_is_a_clear_error(tmp_path: Path) -> None:
    from recsys.errors import ArtifactError

    model, _ = _model()
    model.save(tmp_path / "m")
    (tmp_path / "m" / "warm.npy").unlink()
    with pytest.raises(ArtifactError, match="cannot read the feed artifact"):
        FeedModel.load(tmp_path / "m")


@pytest.mark.parametrize("content_mix", [0.0, 0.4])
def test_linear_form_gives_the_general_scores(content_mix: float) -> None:
    """With gamma = 0 the ranker scores as one matrix product; it must agree with the evaluation's path."""
    from dataclasses import replace

    model, history = _model(n_items=400)
    params = replace(PARAMS, profile_gamma=0.0, cold_profile_gamma=0.0, content_mix=content_mix, cold_profile_tau=1000.0)
    model.params = params
    fast = FeedRanker.build(model, list(model.item_ids))
    slow = FeedRanker.build(model, list(model.item_ids))
    slow.use_linear = False
    assert fast.linear and not slow.linear
    rows = history.select(np.arange(20))
    assert np.allclose(fast.scores(rows), slow.scores(rows), atol=2e-4)
    a, b = fast.rank(rows, 10), slow.rank(rows, 10)
    assert np.array_equal(a.rows, b.rows)
    mask = np.random.default_rng(1).random(400) < 0.6  # filters map onto the linear form's column order
    a_f, b_f = fast.rank(rows, 10, mask), slow.rank(rows, 10, mask)
    assert np.array_equal(a_f.rows, b_f.rows) and mask[a_f.rows].all()
    seen = rows.matrix().tocoo()
    assert not any(r in set(seen.col[seen.row == u]) for u in range(20) for r in a_f.rows[u])
    assert np.allclose(a.cf, b.cf, atol=2e-4) and np.allclose(a.content, b.content, atol=2e-4)
    empty = user_history([np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.float32)], fast.tie_rank, 400)
    assert np.array_equal(fast.rank(empty, 5).rows, slow.rank(empty, 5).rows)  # a cold-start user: popularity


def test_top_k_rows_on_wide_rows_matches_the_evaluation_ranking() -> None:
    rng = np.random.default_rng(5)
    scores = rng.normal(size=(30, 9000)).astype(np.float32)
    scores[:5] = np.round(scores[:5])  # heavy ties
    scores[5, :8990] = -np.inf  # fewer than k finite scores
    scores[6] = 1.0  # one constant row
    prio = rng.permutation(9000)
    for k in (1, 10, 100):
        assert np.array_equal(top_k_rows(scores, k, prio), rank_top_k(scores, k, tie_order=prio))


def test_candidate_path_in_linear_form_uses_exact_statistics() -> None:
    from dataclasses import replace

    model, history = _model(n_items=150)
    model.params = replace(PARAMS, profile_gamma=0.0, cold_profile_gamma=0.0)
    exact = FeedRanker.build(model, list(model.item_ids))
    approx = FeedRanker.build(model, list(model.item_ids), exact_max_items=10, sample_size=5)  # tiny sample: unused
    assert approx.linear and not approx.exact
    rows = history.select(np.arange(8))
    a, b = exact.rank(rows, 15), approx.rank(rows, 15)
    assert np.array_equal(a.rows, b.rows) and np.allclose(a.scores, b.scores, atol=1e-4)

