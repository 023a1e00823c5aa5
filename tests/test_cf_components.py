"""EASE and item-kNN components, their serving path, and the per-catalogue CF tuning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recsys.cf.ease import fit_ease
from recsys.cf.history import History, recency_weights
from recsys.ranking.hybrid import HybridParams
from recsys.recommend.hybrid import HybridRecommender
from recsys.cf.itemitem import ItemItem, fit_item_item
from recsys.cf.itemknn import fit_itemknn
from recsys.ranking.scoring import zscore_rows
from recsys.cf.settings import CFConfig, HybridConfig, TuningConfig
from recsys.recommend.tuning import tune_cf
from recsys.ranking.metrics import rank_top_k
from recsys.recommend.model import FeedModel
from recsys.ranking.ranker import FeedRanker

FAST_HYBRID = HybridConfig(weight_grid=(0.0, 0.5), recency_beta=(0.0, 10.0), recency_tau=(3.0,), profile_tau=(1000.0,),
                           cf_shrink=(0.0,), cold_offset=(0.0,), cold_scale=(1.0,), rounds=1)


def _binary(n_users: int = 120, n_items: int = 40, density: float = 0.15, seed: int = 0) -> sp.csr_matrix:
    x = sp.random(n_users, n_items, density=density, random_state=seed, format="csr", dtype=np.float32)
    x.data[:] = 1.0
    return x


def _history(n_users: int = 150, n_items: int = 60, per_user: int = 8, seed: int = 0) -> History:
    """Users in 3 clusters touching items of their cluster, in a cluster-specific order (so a model can learn)."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        own = np.flatnonzero(np.arange(n_items) % 3 == u % 3)
        users += [u] * per_user
        items += rng.choice(own, size=per_user, replace=False).tolist()
    return History.from_events(np.array(users), np.array(items), n_users, n_items)


def test_ease_matches_the_closed_form() -> None:
    x = _binary()
    g = (x.T @ x).toarray().astype(np.float64) + 7.0 * np.eye(x.shape[1])
    p = np.linalg.inv(g)
    ref = p / -np.diag(p)
    np.fill_diagonal(ref, 0.0)
    b = fit_ease(x, 7.0)
    assert b.dtype == np.float32 and np.allclose(b, ref, atol=1e-5)


def test_itemknn_keeps_the_k_best_shrunk_cosines_per_column() -> None:
    x = _binary(seed=1)
    s = fit_itemknn(x, k=4, shrink=3.0, block=7).toarray()
    d = x.toarray()
    co = d.T @ d
    norm = np.sqrt(np.diag(co))
    ref = co / (norm[:, None] * norm[None, :] + 3.0)
    np.fill_diagonal(ref, 0.0)
    for j in range(ref.shape[1]):
        kept = s[:, j][s[:, j] > 0]
        assert kept.shape[0] <= 4
        assert np.allclose(np.sort(kept)[::-1], np.sort(ref[:, j])[::-1][: kept.shape[0]], atol=1e-6)


@pytest.mark.parametrize("kind", ["ease", "itemknn"])
def test_item_item_over_another_catalogue_and_round_trip(tmp_path: Path, kind: str) -> None:
    x = _binary()
    ii = fit_item_item(x, CFConfig(component=kind, ease_lambda=5.0, knn_k=10))
    assert ii is not None and ii.kind == kind
    ii.save(tmp_path)
    loaded = ItemItem.load(tmp_path, kind)
    rows = x[:5]
    assert np.allclose(loaded.scores(rows), ii.scores(rows), atol=1e-6)
    # a serving catalogue: reversed order plus one item the model never saw
    n = x.shape[1]
    model_rows = np.concatenate([np.arange(n)[::-1], [-1]])
    over = ii.laid_over(model_rows)
    serving_rows = sp.csr_matrix(np.concatenate([rows.toarray()[:, ::-1], np.ones((5, 1), np.float32)], axis=1))
    got = over.scores(serving_rows)
    assert np.allclose(got[:, :n], ii.scores(rows)[:, ::-1], atol=1e-5)
    assert np.all(got[:, n] == 0.0)
    assert ii.laid_over(np.arange(n)).rows is None


def test_ease_above_the_item_cap_falls_back_to_itemknn() -> None:
    cfg = CFConfig(component="ease", tuning=TuningConfig(ease_max_items=10))
    ii = fit_item_item(_binary(), cfg)
    assert ii is not None and ii.kind == "itemknn"


def test_tuning_chooses_on_validation_within_the_budget() -> None:
    h = _history()
    cfg = CFConfig(factors=4, iterations=3, hybrid=FAST_HYBRID,
                   tuning=TuningConfig(als_factors=(4, 8), als_regularization=(0.1,), als_alpha=(1.0,),
                                       ease_lambda=(1.0, 10.0), knn_k=(5, 20), knn_shrink=(0.0,)))
    res = tune_cf(h, cfg, budget_s=600)
    rep = res.report
    assert rep["component"] in ("als", "ease", "itemknn") and res.cfg.component == rep["component"]
    families = {t["family"] for t in rep["trials"]}
    assert families == {"als", "ease", "itemknn"}
    best = max(rep["trials"], key=lambda t: t["ndcg@10"])
    assert rep["best_ndcg@10"][rep["component"]] == best["ndcg@10"]
    assert res.prefit is not None and (res.prefit.item_item is None) == (rep["component"] == "als")
    # a budget already spent: each family gets its first step only
    tight = tune_cf(h, cfg, budget_s=1e-9)
    assert len(tight.report["trials"]) == 3 and set(tight.report["out_of_budget"]) == {"als", "ease", "itemknn"}
    off = tune_cf(h, cfg.model_copy(update={"tuning": TuningConfig(enabled=False)}), budget_s=600)
    assert off.cfg == cfg.model_copy(update={"tuning": TuningConfig(enabled=False)}) and off.prefit is None


@pytest.mark.parametrize("kind", ["ease", "itemknn"])
def test_feed_ranker_scores_an_item_item_model_like_the_evaluation(tmp_path: Path, kind: str) -> None:
    h = _history()
    cfg = CFConfig(factors=4, iterations=3, component=kind, ease_lambda=5.0, knn_k=10,
                   tuning=TuningConfig(enabled=False))
    params = HybridParams(recency_tau=3.0, recency_beta=10.0, warm_pop=0.25)
    rec = HybridRecommender(cfg, params).fit(h)
    comp = rec.components
    assert comp is not None and comp.item_item is not None and comp.item_item.kind == kind
    users = np.arange(12)
    rows = h.select(users)
    cf = zscore_rows(comp.item_item.scores(rows.matrix(recency_weights(rows, 3.0, 10.0))))
    expected = rec.score(users)
    assert np.allclose(expected, 0.8 * cf + 0.2 * comp.pop[None, :], atol=1e-5)
    model = FeedModel(item_ids=np.array([f"i{j}" for j in range(h.n_items)], dtype=object), params=params, cfg=cfg,
                      components=comp, factor_map=None, pop_map=None, pop_mean=0.0, pop_std=1.0, encoders={})
    model.save(tmp_path / "m")
    loaded = FeedModel.load(tmp_path / "m")
    assert loaded.components.item_item is not None and loaded.components.item_item.kind == kind
    ranker = FeedRanker.build(loaded, list(loaded.item_ids))
    assert not ranker.linear
    assert np.allclose(ranker.scores(rows), expected, atol=1e-5)
    ranking = ranker.rank(rows, 10)
    assert np.array_equal(ranking.rows, rank_top_k(expected, 10, h.matrix()[users], tie_order=ranker.priority))
    # the candidate regime scores the item-item component exactly too
    approx = FeedRanker.build(loaded, list(loaded.item_ids), exact_max_items=10, sample_size=10_000)
    b = approx.rank(rows, 10)
    assert np.array_equal(b.rows, ranking.rows)
    # a catalogue with an item the model never saw: scored as a cold item, the others unchanged
    grown = FeedRanker.build(loaded, [*loaded.item_ids, "late"])
    s = grown.scores(rows)
    assert s.shape == (12, h.n_items + 1) and np.isfinite(s).all()


def test_transitions_follow_each_users_order() -> None:
    from recsys.cf.sequence import fit_transitions

    # user 0: 0 -> 1 -> 2; user 1: 0 -> 1; user 2: 2 -> 0
    h = History.from_events(np.array([0, 0, 0, 1, 1, 2, 2]), np.array([0, 1, 2, 0, 1, 2, 0]), 3, 3)
    t = fit_transitions(h, window=1, shrink=0.0).matrix.toarray()
    assert np.allclose(t, [[0, 1, 0], [0, 0, 1], [1, 0, 0]])
    t2 = fit_transitions(h, window=2, decay=0.5, shrink=1.0).matrix.toarray()
    assert np.isclose(t2[0, 1], 2 / 3.5) and np.isclose(t2[0, 2], 0.5 / 3.5)


def test_sequence_weight_enters_the_cf_score_and_the_feed(tmp_path: Path) -> None:
    from recsys.ranking.hybrid import cf_component

    h = _history()
    cfg = CFConfig(factors=4, iterations=3, tuning=TuningConfig(enabled=False))
    params = HybridParams(recency_tau=3.0, seq_weight=0.5, seq_tau=0.5)
    rec = HybridRecommender(cfg, params).fit(h)
    comp = rec.components
    assert comp is not None and comp.seq is not None
    rows = h.select(np.arange(12))
    plain = cf_component(comp, rows, 3.0, 0.0, cfg)
    seq = zscore_rows(comp.seq.scores(rows.matrix(np.exp(-rows.rank / 0.5).astype(np.float32))))
    assert np.allclose(rec.score(np.arange(12)), zscore_rows(plain + 0.5 * seq), atol=1e-4)
    model = FeedModel(item_ids=np.array([f"i{j}" for j in range(h.n_items)], dtype=object), params=params, cfg=cfg,
                      components=comp, factor_map=None, pop_map=None, pop_mean=0.0, pop_std=1.0, encoders={})
    model.save(tmp_path / "m")
    ranker = FeedRanker.build(FeedModel.load(tmp_path / "m"), list(model.item_ids))
    assert not ranker.linear and np.allclose(ranker.scores(rows), rec.score(np.arange(12)), atol=1e-4)


def test_recsys_train_on_an_ids_only_catalogue(tmp_path: Path) -> None:
    """Items with nothing but ids, no flag: `recsys train` tunes the CF part, saves the choice and the
    validation scores in the manifest, and the artifact loads and ranks."""
    import json

    from click.testing import CliRunner

    from recsys.cli import cli

    rng = np.random.default_rng(0)
    (tmp_path / "items.csv").write_text("item_id\n" + "".join(f"p{i}\n" for i in range(60)), encoding="utf-8")
    lines = ["user_id,item_id,timestamp"]
    for u in range(150):
        start = int(rng.integers(0, 60))
        lines += [f"u{u},p{(start + 3 * t) % 60},{t}" for t in range(int(rng.integers(3, 9)))]
    (tmp_path / "events.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"data_dir: {tmp_path / 'data'}\ncf:\n  factors: 4\n  iterations: 3\n  hybrid:\n    rounds: 1\n"
        "  tuning:\n    als_factors: [4]\n    als_regularization: [0.1]\n    als_alpha: [1.0]\n"
        "    ease_lambda: [5.0]\n    knn_k: [20]\n    knn_shrink: [0.0]\n", encoding="utf-8")
    runner = CliRunner()
    base = ["--config", str(cfg)]
    assert runner.invoke(cli, [*base, "db", "upgrade"]).exit_code == 0
    for kind in ("items", "events"):
        res = runner.invoke(cli, [*base, "ingest", kind, str(tmp_path / f"{kind}.csv")])
        assert res.exit_code == 0, res.output
    res = runner.invoke(cli, [*base, "train"])
    assert res.exit_code == 0, res.output
    assert "CF tuned on validation" in res.output and "CF component:" in res.output and "no content" in res.output
    manifest = json.loads(next((tmp_path / "data" / "artifacts" / "feed").glob("*/manifest.json")).read_text())
    tuning = manifest["selection"]["tuning"]
    assert tuning["component"] == manifest["cf"]["component"] and tuning["trials"]
    model = FeedModel.load(next((tmp_path / "data" / "artifacts" / "feed").glob("*/manifest.json")).parent)
    ranker = FeedRanker.build(model, list(model.item_ids))
    h = History.from_events(np.array([0, 0]), np.array([1, 4]), 1, model.n_items)
    assert ranker.rank(h, 5).rows.shape == (1, 5)


def test_items_without_events_keep_a_cf_score_under_an_item_item_component(tmp_path: Path) -> None:
    """With EASE as the CF component and content, items without events are scored by the folded-in user
    vector against their content-mapped ALS factors (what the ALS component gives them), not by the
    item-item score, which is the same for all of them; the feed ranker and the saved model agree."""
    from recsys.cf.history import recency_weights as rw
    from recsys.cf.matrix import apply_confidence
    from recsys.cf.model import fold_in
    from recsys.ranking.hybrid import cf_component, cold_cf_component, hybrid_scores, user_components

    full = _history(n_items=60)
    cold = np.arange(full.n_items) % 10 == 0  # every tenth item loses its events
    keep = ~cold[full.items]
    users = np.repeat(np.arange(full.n_users), np.diff(full.indptr))[keep]
    h = History.from_events(users, full.items[keep], full.n_users, full.n_items)
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 8)).astype(np.float32)
    content = centres[np.arange(h.n_items) % 3] + 0.1 * rng.normal(size=(h.n_items, 8)).astype(np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    cfg = CFConfig(factors=4, iterations=3, component="ease", ease_lambda=5.0, sequence=False,
                   tuning=TuningConfig(enabled=False))
    params = HybridParams(recency_tau=3.0, cold_cf=1.0, cold_pop=0.0)
    rec = HybridRecommender(cfg, params).fit(h, content)
    comp = rec.components
    assert comp is not None and comp.item_item is not None and not comp.warm[cold].any()
    rows = h.select(np.arange(12))
    item_item_cf = cf_component(comp, rows, 3.0, 0.0, cfg)
    assert np.ptp(item_item_cf[:, cold], axis=1).max() < 1e-5  # the item-item score cannot tell them apart
    fold = apply_confidence(rows.matrix(rw(rows, 3.0, 0.0)), cfg, comp.bm25)
    expected = zscore_rows(fold_in(comp.item_factors, fold, cfg) @ comp.item_factors.T)
    cold_cf = cold_cf_component(comp, rows, params, cfg)
    assert cold_cf is not None and np.allclose(cold_cf, expected, atol=1e-5)
    assert np.ptp(cold_cf[:, cold], axis=1).min() > 0.1  # the mapped factors do
    s = rec.score(np.arange(12))
    assert np.allclose(s[:, cold], cold_cf[:, cold], atol=1e-4)  # cold weights: CF only
    assert np.allclose(s[:, ~cold], item_item_cf[:, ~cold], atol=1e-4)  # warm items keep the EASE score
    # without content (no mapped factors) or with an ALS component nothing changes
    assert cold_cf_component(HybridRecommender(cfg, params).fit(h).components, rows, params, cfg) is None
    als = HybridRecommender(cfg.model_copy(update={"component": "als"}), params).fit(h, content)
    assert user_components(als.components, rows, params, als.cfg).cold_cf is None
    u = user_components(comp, rows, params, cfg)
    assert np.allclose(hybrid_scores(u.cf, u.content, comp.pop, comp.warm, params, u.scale, u.cold_content, u.cold_cf), s)
    model = FeedModel(item_ids=np.array([f"i{j}" for j in range(h.n_items)], dtype=object), params=params, cfg=cfg,
                      components=comp, factor_map=comp.factor_map, pop_map=comp.pop_map, pop_mean=comp.pop_mean,
                      pop_std=comp.pop_std, encoders={})
    model.save(tmp_path / "m")
    loaded = FeedModel.load(tmp_path / "m")
    ranker = FeedRanker.build(loaded, list(model.item_ids))
    assert np.allclose(ranker.scores(rows), s, atol=1e-4)
    approx = FeedRanker.build(loaded, list(loaded.item_ids), exact_max_items=10, sample_size=10_000)
    exact = ranker.rank(rows, 10)
    assert np.array_equal(approx.rank(rows, 10).rows, exact.rows)
