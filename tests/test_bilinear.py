"""The learned content score of cold items: fitted on the warm items' events, chosen on the item hold-out
carves, scored alike by the evaluation, the ranker (both regimes) and a saved artifact."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from recsys.cf.history import History
from recsys.cf.settings import CFConfig, HybridConfig, TuningConfig
from recsys.ranking.hybrid import HybridParams, bilinear_component, content_component
from recsys.ranking.ranker import FeedRanker
from recsys.recommend import components
from recsys.recommend.components import fit_components
from recsys.recommend.hybrid import HybridRecommender
from recsys.recommend.model import FeedModel
from recsys.recommend.selection import select_params

K = 6  # groups; items of kind A and B per group


def _data(seed: int = 0) -> tuple[History, np.ndarray, np.ndarray, np.ndarray]:
    """Group ``k`` has 6 items of kind A (content near ``e_k``) and 6 of kind B (near ``e_{K+k}``): A and B
    items of a group are orthogonal, so their cosine says nothing about each other. Half the users take A
    and B items of one group; the others only A items. The B items ``b % 3 == 0`` have no events (cold).

    Returns ``(history, content, group of each item, cold mask)``; users ``>= 150`` hold A items only."""
    rng = np.random.default_rng(seed)
    per = 6
    kind_b = np.tile(np.repeat([False, True], per), K)
    group = np.repeat(np.arange(K), 2 * per)
    n_items = group.shape[0]
    cold = kind_b & (np.arange(n_items) % 3 == 0)
    x = np.zeros((n_items, 2 * K), np.float32)
    x[np.arange(n_items), group + K * kind_b] = 1.0
    x = np.concatenate([x, rng.normal(size=(n_items, 8)).astype(np.float32) * 0.15], axis=1)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    users, items = [], []
    for u in range(300):
        g = u % K
        a = rng.choice(np.flatnonzero((group == g) & ~kind_b), size=3, replace=False).tolist()
        b = rng.choice(np.flatnonzero((group == g) & kind_b & ~cold), size=3, replace=False).tolist() if u < 150 else []
        users += [u] * (len(a) + len(b))
        items += a + b
    return History.from_events(np.array(users), np.array(items), 300, n_items), x, group, cold


def _cfg(cold_bilinear: tuple[float, ...] = (0.0, 1.0)) -> CFConfig:
    hyb = HybridConfig(weight_grid=(0.0, 1.0), recency_beta=(0.0,), recency_tau=(3.0,), profile_tau=(1000.0,),
                       profile_gamma=(0.0,), cf_shrink=(0.0,), cold_offset=(0.0,), cold_scale=(1.0,), rounds=1,
                       cold_als=(), cold_carves=2, cold_bilinear=cold_bilinear, bilinear_l2=0.1)
    return CFConfig(factors=4, iterations=5, sequence=False, hybrid=hyb, tuning=TuningConfig(enabled=False))


def _hits(scores: np.ndarray, rows: np.ndarray, group: np.ndarray, cold: np.ndarray) -> float:
    """Share of the users ``rows`` whose best cold item is of their group."""
    cold_rows = np.flatnonzero(cold)
    best = cold_rows[scores[:, cold_rows].argmax(axis=1)]
    return float(np.mean(group[best] == rows % K))


def test_the_learned_score_finds_what_the_cosine_cannot() -> None:
    h, x, group, cold = _data()
    comp = fit_components(h, (x,), _cfg(), bilinear=True)
    assert comp.content_map is not None and comp.content_map.shape == (x.shape[1], x.shape[1])
    only_a = np.arange(150, 300)  # their items share no content with the cold (B) items of their group
    rows = h.select(only_a)
    assert _hits(bilinear_component(comp, rows), only_a, group, cold) > 0.8  # chance: 1/6
    assert _hits(content_component(comp, rows, 1000.0, 0.0), only_a, group, cold) < 0.5
    assert fit_components(h, (x,), _cfg()).content_map is None  # fitted only when asked for


def test_validation_weighs_it_in_on_the_item_carves(monkeypatch: pytest.MonkeyPatch) -> None:
    h, x, _, _ = _data(1)
    params, report = select_params(h, (x,), _cfg())
    assert params.cold_content > 0 and params.cold_bilinear == 1.0, report["cold_items"]

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the map was fitted without a candidate weight above 0")

    # without a candidate weight above 0 no carve fits the map (no cost) and the weight stays 0
    monkeypatch.setattr(components, "fit_content_map", refuse)
    assert select_params(h, (x,), _cfg((0.0,)))[0].cold_bilinear == 0.0


def test_fit_ranker_and_artifact_score_alike(tmp_path: Path) -> None:
    h, x, group, cold = _data(2)
    cfg = _cfg()
    params = HybridParams(recency_tau=3.0, warm_content=1.0, cold_cf=0.0, cold_content=1.0, cold_pop=0.5,
                          cold_profile_gamma=10.0, cold_bilinear=1.0)
    rec = HybridRecommender(cfg, params).fit(h, (x,))
    comp = rec.components
    assert comp is not None and comp.content_map is not None
    users = np.arange(140, 170)
    rows = h.select(users)
    s = rec.score(users)
    s_without = HybridRecommender(cfg, replace(params, cold_bilinear=0.0), comp, h).score(users)
    assert np.allclose(s[:, ~cold], s_without[:, ~cold], atol=1e-5)  # warm items: unchanged
    a = users >= 150  # A items only: the learned score is what finds their cold items
    assert _hits(s[a], users[a], group, cold) > _hits(s_without[a], users[a], group, cold) + 0.3
    model = FeedModel(item_ids=np.array([f"i{j}" for j in range(h.n_items)], dtype=object), params=params, cfg=cfg,
                      components=comp, factor_map=comp.factor_map, pop_map=comp.pop_map, pop_mean=comp.pop_mean,
                      pop_std=comp.pop_std, encoders={})
    model.save(tmp_path / "m")
    loaded = FeedModel.load(tmp_path / "m")
    assert loaded.params.cold_bilinear == 1.0 and loaded.components.content_map is not None
    ranker = FeedRanker.build(loaded, list(model.item_ids))
    assert not ranker.linear and np.allclose(ranker.scores(rows), s, atol=1e-4)
    # the candidate regime standardises with a sample: the whole catalogue here, so the same ranking
    approx = FeedRanker.build(loaded, list(loaded.item_ids), exact_max_items=10, sample_size=10_000)
    assert np.array_equal(approx.rank(rows, 10).rows, ranker.rank(rows, 10).rows)
    # an artifact written before the learned content score existed still loads (without it)
    (tmp_path / "m" / "content_map.npy").unlink()
    man = json.loads((tmp_path / "m" / "manifest.json").read_text())
    del man["content_map"]
    del man["params"]["cold_bilinear"]
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(man))
    old = FeedModel.load(tmp_path / "m")
    assert old.params.cold_bilinear == 0.0 and old.components.content_map is None
    assert np.allclose(FeedRanker.build(old, list(old.item_ids)).scores(rows), s_without, atol=1e-4)
