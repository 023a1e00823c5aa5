"""The cold path's own ALS factors: chosen on the cold-items carve, fitted, served and saved."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from recsys.cf.history import History
from recsys.cf.settings import CFConfig, HybridConfig, TuningConfig
from recsys.ranking.hybrid import HybridParams, cold_cf_component
from recsys.ranking.ranker import FeedRanker
from recsys.recommend.hybrid import HybridRecommender
from recsys.recommend.model import FeedModel
from recsys.recommend.selection import cold_als_candidates, score_on_item_carves, select_params

GOOD = (8, 1.0, 1.0)


def _data(seed: int = 0) -> tuple[History, np.ndarray]:
    """Users each buying items of one of 6 groups; the content holds the group in 6 weak dimensions under 64
    noisy ones, so a content profile sees mostly noise while a ridge map to factors that know the groups
    learns which dimensions matter."""
    rng = np.random.default_rng(seed)
    n_users, n_items, n_groups = 300, 120, 6
    group = np.arange(n_items) % n_groups
    users, items = [], []
    for u in range(n_users):
        items += rng.choice(np.flatnonzero(group == u % n_groups), size=8, replace=False).tolist()
        users += [u] * 8
    h = History.from_events(np.array(users), np.array(items), n_users, n_items)
    x = np.concatenate([0.3 * np.eye(n_groups, dtype=np.float32)[group],
                        rng.normal(size=(n_items, 64)).astype(np.float32) / 8.0], axis=1)
    return h, x / np.linalg.norm(x, axis=1, keepdims=True)


def _cfg(cold_als: tuple[tuple[int, float, float], ...] = (GOOD,)) -> CFConfig:
    """Warm ALS settings that cannot tell the groups apart (1 factor, heavy regularisation)."""
    hyb = HybridConfig(weight_grid=(0.0, 0.5, 1.0), recency_beta=(0.0,), recency_tau=(3.0,), profile_tau=(1000.0,),
                       profile_gamma=(0.0,), cf_shrink=(0.0,), cold_offset=(0.0,), cold_scale=(1.0,), rounds=1,
                       cold_als=cold_als, mapping_l2=1.0, cold_carves=2)
    return CFConfig(factors=1, regularization=100.0, alpha=0.5, iterations=5, sequence=False, hybrid=hyb,
                    tuning=TuningConfig(enabled=False))


def test_candidates_start_with_the_warm_settings_without_repeats() -> None:
    cfg = _cfg(((1, 100.0, 0.5), GOOD, GOOD))
    assert cold_als_candidates(cfg) == [(1, 100.0, 0.5), GOOD]


def test_the_cold_items_carve_chooses_factors_that_map_from_content() -> None:
    """The warm factors mapped from content barely rank held-out items; the candidate whose factors know
    the groups scores clearly higher on the carve, so it is chosen with a CF weight, and recorded."""
    for seed in (0, 1):
        h, x = _data(seed)
        params, report = select_params(h, (x,), _cfg())
        cold = report["cold_items"]
        warm_trial, good_trial = cold["cold_als_trials"]
        assert (warm_trial["factors"], good_trial["factors"]) == (1, 8)
        assert good_trial["ndcg@10"] > warm_trial["ndcg@10"] + 0.05
        assert params.cold_als == GOOD and params.cold_cf > 0
        assert cold["cold_als"] == GOOD and cold["ndcg@10"] == good_trial["ndcg@10"]
        assert report["params"]["cold_als_factors"] == 8.0
        assert len(cold["users"]) == 2  # the mean over two item hold-out carves (cf.hybrid.cold_carves)
    # without candidates: the warm factors only, nothing extra recorded as chosen
    params, report = select_params(h, (x,), _cfg(()))
    assert params.cold_als is None and len(report["cold_items"]["cold_als_trials"]) == 1
    # without content there is no cold stage and no second fit
    params, report = select_params(h, None, _cfg())
    assert params.cold_als is None and "cold_items" not in report


def test_fresh_carves_score_a_choice_like_the_carves_that_chose_it() -> None:
    """score_on_item_carves on the selection's own seeds gives back the cold stage's validation score
    (the same carves, the same evaluation); on other seeds it scores the chosen settings on items the
    choice never saw, and the good cold factors still beat the warm ones there."""
    h, x = _data(0)
    cfg = _cfg()
    params, report = select_params(h, (x,), cfg)
    own = score_on_item_carves(params, h, (x,), cfg, [0, 1])
    assert round(float(np.mean(own)), 5) == report["cold_items"]["ndcg@10"]
    fresh = score_on_item_carves(params, h, (x,), cfg, [100, 101, 102])
    warm_only, _ = select_params(h, (x,), _cfg(()))
    fresh_warm = score_on_item_carves(warm_only, h, (x,), _cfg(()), [100, 101, 102])
    assert len(fresh) == 3 and np.mean(fresh) > np.mean(fresh_warm) + 0.05


def test_own_cold_factors_score_cold_items_in_the_fit_the_ranker_and_the_artifact(tmp_path: Path) -> None:
    h_full, x = _data(2)
    cold = np.arange(h_full.n_items) % 10 == 0  # every tenth item loses its events
    keep = ~cold[h_full.items]
    users = np.repeat(np.arange(h_full.n_users), np.diff(h_full.indptr))[keep]
    h = History.from_events(users, h_full.items[keep], h_full.n_users, h_full.n_items)
    cfg = _cfg()
    params = HybridParams(recency_tau=3.0, cold_cf=1.0, cold_content=0.5, cold_als_factors=8.0,
                          cold_als_regularization=1.0, cold_als_alpha=1.0)
    rec = HybridRecommender(cfg, params).fit(h, (x,))
    comp = rec.components
    assert comp is not None and comp.cold_factors is not None and comp.cold_factors.shape == (h.n_items, 8)
    assert comp.item_factors.shape[1] == 1
    rows = h.select(np.arange(30))
    own = cold_cf_component(comp, rows, params, cfg)
    assert own is not None and np.ptp(own[:, cold], axis=1).min() > 0.1
    # the same settings without own factors: the ALS component's CF score covers the cold items
    assert cold_cf_component(comp, rows, replace(params, cold_als_factors=0.0), cfg) is None
    s = rec.score(np.arange(30))
    without = replace(comp, cold_factors=None, cold_factor_map=None)
    s_without = HybridRecommender(cfg, params, without, h).score(np.arange(30))
    assert np.allclose(s[:, ~cold], s_without[:, ~cold], atol=1e-5)  # warm items: unchanged
    assert not np.allclose(s[:, cold], s_without[:, cold], atol=1e-3)  # cold items: their own factors
    model = FeedModel(item_ids=np.array([f"i{j}" for j in range(h.n_items)], dtype=object), params=params, cfg=cfg,
                      components=comp, factor_map=comp.factor_map, pop_map=comp.pop_map, pop_mean=comp.pop_mean,
                      pop_std=comp.pop_std, encoders={})
    model.save(tmp_path / "m")
    loaded = FeedModel.load(tmp_path / "m")
    assert loaded.params.cold_als == GOOD and loaded.components.cold_factors is not None
    ranker = FeedRanker.build(loaded, list(model.item_ids))
    assert not ranker.linear and np.allclose(ranker.scores(rows), s, atol=1e-4)
    approx = FeedRanker.build(loaded, list(loaded.item_ids), exact_max_items=10, sample_size=10_000)
    assert np.array_equal(approx.rank(rows, 10).rows, ranker.rank(rows, 10).rows)
    # an item that arrives after training gets its cold factors from the saved content -> factor map
    new_ids = list(model.item_ids) + ["new"]
    grown = FeedRanker.build(loaded, new_ids, new_item_blocks=lambda ids: (x[:1].copy(),))
    assert grown.components.cold_factors is not None
    assert np.allclose(grown.components.cold_factors[-1], comp.cold_factor_map(x[:1])[0], atol=1e-5)
    # an artifact written before the cold factors existed still loads (the cold path: the warm factors)
    for name in ("cold_item_factors.npy", "cold_factor_map.npz"):
        (tmp_path / "m" / name).unlink()
    man = json.loads((tmp_path / "m" / "manifest.json").read_text())
    del man["cold_factors"]
    for key in ("cold_als_factors", "cold_als_regularization", "cold_als_alpha"):
        del man["params"][key]
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(man))
    old = FeedModel.load(tmp_path / "m")
    assert old.params.cold_als is None and old.components.cold_factors is None
    assert np.allclose(FeedRanker.build(old, list(old.item_ids)).scores(rows), s_without, atol=1e-4)
