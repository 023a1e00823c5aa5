"""The learned reranker: features, LambdaRank on a planted signal, artifacts, and the simulation's pieces."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recsys.cf.history import History
from recsys.experiments.simulation import (
    ClickModel,
    aa_repeats,
    ab_lists_estimate,
    interleaving_lists_estimate,
    lists_needed,
    temporal_split,
)
from recsys.ranking.learned import FEATURES, LearnedReranker, fit_lambdarank
from recsys.recommend.reranker_training import split_history


def test_lambdarank_learns_a_planted_signal_and_round_trips(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    q, per = 300, 20
    X = rng.normal(size=(q * per, len(FEATURES))).astype(np.float32)
    y = (X[:, 4] + 0.3 * rng.normal(size=q * per) > 1.0).astype(float)  # relevance follows "popularity"
    groups = np.full(q, per)
    booster, info = fit_lambdarank(X[: 240 * per], y[: 240 * per], groups[:240], num_rounds=50,
                                   valid=(X[240 * per :], y[240 * per :], groups[240:]))
    assert info["valid_ndcg@10"] > 0.8
    rr = LearnedReranker(booster, "v1", {"source": "test"})
    rows = np.arange(per, dtype=np.int64)
    rows[-1] = -1  # a padded slot is never returned
    Xq = X[:per].copy()
    top, _ = rr.rerank(rows, Xq, 5)
    assert -1 not in top and len(top) == 5
    assert Xq[top[0], 4] >= np.median(Xq[:-1, 4])
    back = LearnedReranker.load(rr.save(tmp_path / "rr"))
    assert np.allclose(back.score(X[:50]), rr.score(X[:50])) and back.version == "v1"


def test_split_history_keeps_the_latest_items_out() -> None:
    h = History.from_events(np.array([0, 0, 0, 0, 0, 1, 2, 2]), np.array([5, 3, 1, 2, 4, 0, 1, 2]), 3, 6)
    past, future = split_history(h, 0.4)
    assert [sorted(f.tolist()) for f in future] == [[2, 4], [], [2]]
    assert past.counts.tolist() == [3, 1, 1]
    assert set(past.items[past.indptr[0] : past.indptr[1]].tolist()) == {5, 3, 1}


def test_simulation_pieces() -> None:
    ev = pd.DataFrame({"user_id": [1] * 5 + [2] * 2 + [3], "item_id": [10, 11, 12, 13, 14, 10, 15, 10],
                       "timestamp": [1, 2, 3, 4, 5, 1, 2, 1]})
    past, future = temporal_split(ev)
    assert future == {"1": {"14"}, "2": {"15"}}
    assert len(past) == 6 and not ((past.user_id == 1) & (past.item_id == 14)).any()
    model = ClickModel(eta=1.0, p_future=0.5, p_other=0.0)
    rng = random.Random(0)
    hits = [model.clicks(["a", "b"], {"a", "b"}, rng) for _ in range(4000)]
    top = sum(0 in h for h in hits) / 4000
    second = sum(1 in h for h in hits) / 4000
    assert top == pytest.approx(0.5, abs=0.03) and second == pytest.approx(0.25, abs=0.03)
    assert model.clicks(["x"], {"a"}, rng) == []
    assert lists_needed([(10, 0.2), (20, 0.005), (30, 0.02), (40, 0.004), (50, 0.001)], 0.01) == 40
    assert lists_needed([(10, 0.2)], 0.01) is None
    assert ab_lists_estimate(0.3, 0.2, 0.01) > interleaving_lists_estimate(0.7, 0.3, 0.01) > 0


def test_aa_repeats_are_rarely_significant() -> None:
    rng = random.Random(1)
    items = [f"i{j}" for j in range(30)]
    lists = [(f"u{n % 200}", tuple(rng.sample(items, 10))) for n in range(600)]
    future = {f"u{u}": set(rng.sample(items, 5)) for u in range(200)}
    out = aa_repeats(lists, future, ClickModel(), repeats=60, alpha=0.05)
    assert out["not_significant_share"] >= 0.85  # about 0.95 expected; 60 repeats leave room for chance


def test_depth_and_blend_are_chosen_on_held_out_queries() -> None:
    from recsys.ranking.learned import SHOWN_POSITION, choose_depth_blend

    rng = np.random.default_rng(1)
    q, per = 200, 30
    X = rng.normal(size=(q * per, len(FEATURES))).astype(np.float32)
    X[:, 1] = np.tile(np.arange(per), q)  # base_rank: rows are in the hybrid's order
    X[:, 0] = -X[:, 1]  # the hybrid's score
    X[:, SHOWN_POSITION] = 0.0
    planted = (X[:, 4] > 1.2).astype(float)  # relevance the reranker can learn, and the hybrid does not see
    groups = np.full(q, per)
    booster, _ = fit_lambdarank(X[: 150 * per], planted[: 150 * per], groups[:150], num_rounds=40)
    held = slice(150 * per, None)
    depth, blend, table = choose_depth_blend(booster, X[held], planted[held], groups[150:])
    assert blend > 0 and depth >= per, (depth, blend)
    assert table[f"{depth}/{blend}"] > table["10/0.0"]
    # labels that follow the hybrid's own order: the reranker (trained on the planted signal) is not used
    top3 = (X[:, 1] < 3).astype(float)
    depth, blend, _ = choose_depth_blend(booster, X[held], top3[held], groups[150:])
    assert blend == 0.0
    # serving keeps the hybrid's order below the chosen depth
    rr = LearnedReranker(booster, "v", {"depth": 5, "blend": 1.0})
    rows = np.arange(per, dtype=np.int64)
    top, scores = rr.rerank(rows, X[:per], 12)
    assert sorted(top[:5].tolist()) == [0, 1, 2, 3, 4] and top[5:].tolist() == list(range(5, 12))
    assert np.all(np.diff(scores) <= 0)
    same, _ = LearnedReranker(booster, "v", {"depth": 30, "blend": 0.0}).rerank(rows, X[:per], 10)
    assert same.tolist() == list(range(10))


def test_skipped_features_count_lists_shown_without_a_click() -> None:
    from recsys.experiments.exposure import ShownList, skipped
    from recsys.ranking.learned import SKIPPED, fill_skipped

    lists = [ShownList(1, "r1", ("a", "b", "c"), frozenset({"b"})),
             ShownList(2, "r2", ("c", "a", "b"), frozenset()),
             ShownList(3, "r3", ("d",), frozenset({"d"}))]
    got = skipped(lists)
    assert got == {"a": (2, 0), "c": (2, 0), "b": (1, 2)}  # "d" was clicked whenever shown
    X = np.zeros((4, len(FEATURES)), np.float32)
    X[:, SKIPPED + 1] = np.nan
    fill_skipped(X, np.array([2, 0, 3, -1]), ["a", "b", "c", "d"], got)
    assert X[0, SKIPPED] == pytest.approx(np.log1p(2)) and X[0, SKIPPED + 1] == 0.0  # "c"
    assert X[1, SKIPPED] == pytest.approx(np.log1p(2)) and X[1, SKIPPED + 1] == 0.0  # "a"
    assert X[2, SKIPPED] == 0.0 and np.isnan(X[2, SKIPPED + 1]) and np.isnan(X[3, SKIPPED + 1])  # "d", a pad


def test_the_serving_read_of_a_users_lists_is_bounded_to_the_newest(sqlite_engine: Any) -> None:
    """A user who requested many feeds costs the reranker's per-request read no more than ``latest`` lists."""
    from sqlalchemy.orm import Session

    from recsys.experiments.exposure import read_user_lists
    from recsys.store.db import upgrade
    from recsys.store.models import Impression, ImpressionItem

    upgrade(sqlite_engine)
    with Session(sqlite_engine) as s:
        for t in range(6):
            s.add(Impression(request_id=f"r{t}", surface="feed", user_id="u1", ts_ms=1_000 * (t + 1)))
            s.add(ImpressionItem(request_id=f"r{t}", position=0, item_id=f"i{t}"))
        s.add(Impression(request_id="other", surface="feed", user_id="u2", ts_ms=9_000))
        s.commit()
    every = read_user_lists(sqlite_engine, ["u1"])["u1"]
    assert [x.request_id for x in every] == [f"r{t}" for t in range(6)]
    newest = read_user_lists(sqlite_engine, ["u1"], latest=2)["u1"]
    assert [(x.request_id, x.items) for x in newest] == [("r4", ("i4",)), ("r5", ("i5",))]
