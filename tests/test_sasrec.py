"""The SASRec-style sequence component: it learns an order, round-trips, keeps to its budget, and the
hybrid's validation can choose it (weight 0 leaves the score as it was)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from recsys.cf.history import History
from recsys.cf.sasrec import SasrecModel, fit_sasrec, sequences, training_windows
from recsys.cf.settings import CFConfig, HybridConfig, SasrecConfig, TuningConfig
from recsys.ranking.hybrid import HybridParams, cf_component
from recsys.ranking.ranker import FeedRanker
from recsys.ranking.scoring import zscore_rows
from recsys.recommend.hybrid import HybridRecommender
from recsys.recommend.model import FeedModel
from recsys.recommend.selection import select_params

SMALL = SasrecConfig(dim=16, max_len=8, dropout=0.0, learning_rate=0.02, batch_size=64, max_epochs=40,
                     eval_every=5, patience=3)


def _cycles(n_users: int = 200, n_items: int = 24, seed: int = 0) -> History:
    """Users walking the cycle ``i -> i + 1 (mod n_items)`` from a random start, 4-12 steps: every item is
    equally popular and co-occurs with its neighbours on both sides, so only the order tells what is next."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        start, length = int(rng.integers(n_items)), int(rng.integers(4, 13))
        users += [u] * length
        items += [(start + t) % n_items for t in range(length)]
    return History.from_events(np.array(users), np.array(items), n_users, n_items)


def _next_item_hits(model: SasrecModel, h: History) -> float:
    """Share of users whose best unseen item is the one after their newest."""
    s = model.scores(h)
    s[h.matrix().toarray() > 0] = -np.inf
    newest = h.items[h.indptr[:-1]]
    return float(np.mean(s.argmax(axis=1) == (newest + 1) % h.n_items))


def test_windows_and_sequences_follow_the_order() -> None:
    # one user: items 5, 6, 7, 8, 9 in time order; windows of 3 targets
    h = History.from_events(np.zeros(5, np.int64), np.array([5, 6, 7, 8, 9]), 1, 10)
    inputs, targets = training_windows(h, 3)
    assert inputs.tolist() == [[7, 8, 9], [0, 0, 6]] and targets.tolist() == [[8, 9, 10], [0, 0, 7]]
    assert training_windows(h, 3, max_windows=1)[0].tolist() == [[7, 8, 9]]
    assert sequences(h, 3).tolist() == [[8, 9, 10]] and sequences(h, 7).tolist() == [[0, 0, 6, 7, 8, 9, 10]]


def test_learns_the_order_of_a_cycle() -> None:
    h = _cycles()
    fit = fit_sasrec(h, SMALL, seed=0, max_seconds=120.0, epochs=40)
    assert fit.model is not None and fit.report["trained"] and fit.report["epochs"] == 40
    assert _next_item_hits(fit.model, h) > 0.9
    # the same items per user in a random order: co-occurrence alone cannot tell i + 1 from i - 1
    rng = np.random.default_rng(5)
    shuffled = np.concatenate([rng.permutation(h.items[h.indptr[u] : h.indptr[u + 1]]) for u in range(h.n_users)])
    h_shuffled = History.from_events(np.repeat(np.arange(h.n_users), h.counts), shuffled, h.n_users, h.n_items)
    unordered = fit_sasrec(h_shuffled, SMALL, seed=0, max_seconds=120.0, epochs=40).model
    assert unordered is not None and _next_item_hits(unordered, h) < 0.6
    again = fit_sasrec(h, SMALL, seed=0, max_seconds=120.0, epochs=40).model  # seeded: the same weights
    assert again is not None and all(np.array_equal(fit.model.state[k], again.state[k]) for k in fit.model.state)


def test_validation_picks_the_epochs_and_the_budget_skips() -> None:
    h = _cycles()
    calls: list[int] = []

    def validate(m: SasrecModel) -> float:
        calls.append(m.epochs)
        return -abs(m.epochs - 10)  # best at 10 epochs, worse after: stops after `patience` scores

    fit = fit_sasrec(h, SMALL, seed=0, max_seconds=120.0, validate=validate)
    assert fit.model is not None and fit.model.epochs == 10 and calls == [5, 10, 15, 20, 25]
    assert fit.report["best_ndcg@10"] == 0
    skipped = fit_sasrec(h, SMALL, seed=0, max_seconds=1e-6, validate=validate)
    assert skipped.model is None and not skipped.report["trained"]
    assert skipped.report["skipped"].startswith("out of budget")


def test_save_load_and_laid_over_give_the_same_scores(tmp_path: Path) -> None:
    h = _cycles(n_users=60)
    model = fit_sasrec(h, SMALL, seed=0, max_seconds=60.0, epochs=3).model
    assert model is not None
    model.save(tmp_path)
    loaded = SasrecModel.load(tmp_path)
    rows = h.select(np.arange(20))
    assert np.array_equal(loaded.scores(rows), model.scores(rows))
    # a serving catalogue in another order with one item the model never saw
    perm = np.random.default_rng(1).permutation(h.n_items)
    serving = np.concatenate([perm, [-1]])  # serving row -> model row
    laid = loaded.laid_over(serving)
    inv = np.argsort(perm)  # model row -> serving row
    rows_s = History(rows.n_users, h.n_items + 1, rows.indptr, inv[rows.items], rows.rank, rows.weight)
    s = laid.scores(rows_s)
    ref = model.scores(rows)
    assert np.allclose(s[:, :-1], ref[:, perm], atol=1e-5)
    assert np.allclose(s[:, -1], ref.mean(axis=1), atol=1e-5)  # the unknown item: neutral, the user's mean
    # items without training events (embeddings never trained) are neutral too
    lost = h.items != 3
    h2 = History.from_events(np.repeat(np.arange(h.n_users), h.counts)[lost], h.items[lost], h.n_users, h.n_items)
    m2 = fit_sasrec(h2, SMALL, seed=0, max_seconds=60.0, epochs=2).model
    assert m2 is not None and m2.trained is not None and not m2.trained[3] and m2.trained.sum() == h.n_items - 1
    s2 = m2.scores(h2.select(np.arange(5)))
    assert np.allclose(s2[:, 3], np.delete(s2, 3, axis=1).mean(axis=1), atol=1e-5)


def _cfg(**sasrec: float) -> CFConfig:
    hybrid = HybridConfig(weight_grid=(0.0,), recency_beta=(0.0,), recency_tau=(3.0,), profile_tau=(1000.0,),
                          cf_shrink=(0.0,), cold_offset=(0.0,), cold_scale=(1.0,), rounds=1,
                          sasrec_weight=(0.0, 1.0, 4.0))
    return CFConfig(factors=4, iterations=3, sequence=False, tuning=TuningConfig(enabled=False), hybrid=hybrid,
                    sasrec=SMALL.model_copy(update=sasrec))


def test_selection_chooses_it_where_order_matters_and_weight_zero_changes_nothing(tmp_path: Path) -> None:
    h = _cycles(n_users=300)
    cfg = _cfg()
    params, report = select_params(h, None, cfg, sasrec_seconds=300.0)
    sas = report["sasrec"]
    assert sas["trained"] and params.sasrec_weight > 0 and params.sasrec_epochs == sas["epochs"]
    assert sas["blend_ndcg@10_with"] > sas["blend_ndcg@10_without"] + 0.05
    # no time left: skipped, said so, weight 0
    p0, r0 = select_params(h, None, cfg, sasrec_seconds=0.0)
    assert p0.sasrec_weight == 0 and r0["sasrec"]["skipped"].startswith("out of budget")
    # the final fit trains as many epochs on the whole history; the score is z(cf + w * z(sasrec))
    rec = HybridRecommender(cfg, params).fit(h)
    comp = rec.components
    assert comp is not None and comp.sasrec is not None and comp.sasrec.epochs == params.sasrec_epochs
    rows = h.select(np.arange(15))
    plain = cf_component(comp, rows, params.recency_tau, params.recency_beta, cfg)
    assert np.array_equal(plain, cf_component(replace(comp, sasrec=None), rows, params.recency_tau,
                                              params.recency_beta, cfg, sasrec_weight=params.sasrec_weight))
    assert np.array_equal(plain, cf_component(comp, rows, params.recency_tau, params.recency_beta, cfg,
                                              sasrec_weight=0.0))
    expected = zscore_rows(plain + np.float32(params.sasrec_weight) * zscore_rows(comp.sasrec.scores(rows)))
    assert np.allclose(rec.score(np.arange(15)), expected, atol=1e-4)
    # the artifact keeps it; the feed ranker (exact and candidate regimes) scores with it
    model = FeedModel(item_ids=np.array([f"i{j}" for j in range(h.n_items)], dtype=object), params=params, cfg=cfg,
                      components=comp, factor_map=None, pop_map=None, pop_mean=0.0, pop_std=1.0, encoders={})
    model.save(tmp_path / "m")
    loaded = FeedModel.load(tmp_path / "m")
    assert loaded.components.sasrec is not None
    ranker = FeedRanker.build(loaded, list(model.item_ids))
    assert not ranker.linear and np.allclose(ranker.scores(rows), rec.score(np.arange(15)), atol=1e-4)
    approx = FeedRanker.build(loaded, list(model.item_ids), exact_max_items=10, sample_size=10_000)
    assert np.array_equal(approx.rank(rows, 5).rows, ranker.rank(rows, 5).rows)
    # an artifact without it (older, or weight 0) loads and scores as before
    old = replace(model, params=replace(params, sasrec_weight=0.0, sasrec_epochs=0.0),
                  components=replace(comp, sasrec=None))
    old.save(tmp_path / "old")
    assert FeedModel.load(tmp_path / "old").components.sasrec is None


def test_hybrid_fit_skips_it_when_the_budget_is_spent() -> None:
    h = _cycles(n_users=100)
    cfg = _cfg().model_copy(update={"tuning": TuningConfig(als_factors=(4,), als_regularization=(0.1,),
                                                           als_alpha=(1.0,), ease_lambda=(5.0,), knn_k=(20,),
                                                           knn_shrink=(0.0,))})
    rec = HybridRecommender(cfg, budget_s=1e-3).fit(h)
    assert rec.params is not None and rec.params.sasrec_weight == 0 and rec.components.sasrec is None
    assert rec.selection["sasrec"]["skipped"].startswith("out of budget")
    off = HybridRecommender(cfg.model_copy(update={"sasrec": SMALL.model_copy(update={"enabled": False})}),
                            params=HybridParams(sasrec_weight=1.0)).fit(h)  # no epochs chosen: nothing to fit
    assert off.components is not None and off.components.sasrec is None


def test_the_thread_probe_leaves_the_training_as_it_was() -> None:
    # train_threads 0 times a few steps on one thread and on all cores first; with dropout (torch's random
    # stream) and sampled negatives (numpy's), the fit must equal a fit told that many threads outright
    h = _cycles(n_users=60)
    cfg = SMALL.model_copy(update={"dropout": 0.2, "full_softmax_max_items": 10, "negatives": 8,
                                   "max_epochs": 3, "eval_every": 1})
    probed = fit_sasrec(h, cfg.model_copy(update={"train_threads": 0}), seed=3, max_seconds=60.0, epochs=3)
    threads = probed.report["threads"]
    assert threads >= 1
    told = fit_sasrec(h, cfg.model_copy(update={"train_threads": threads}), seed=3, max_seconds=60.0, epochs=3)
    assert told.report["threads"] == threads and probed.model is not None and told.model is not None
    for k, v in told.model.state.items():
        np.testing.assert_array_equal(probed.model.state[k], v, err_msg=k)
