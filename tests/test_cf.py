"""Interaction matrix from SQL, confidence scaling, ALS/BPR factors, fold-in, artifacts and `recsys train`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from click.testing import CliRunner
from sqlalchemy import Engine, insert

from recsys.cf.idmap import IdMap
from recsys.cf.matrix import (
    apply_confidence,
    bm25_stats,
    combine_events,
    decay_factors,
    event_weights,
)
from recsys.cf.model import CFModel, fit_factors, fold_in
from recsys.cf.settings import CFConfig
from recsys.cf.sql import matrix_from_sql
from recsys.cf.train import load_cf, train_from_sql
from recsys.config import Config
from recsys.errors import ArtifactError, RecsysError, UnknownIdError
from recsys.store.artifacts import active_artifact, list_artifacts
from recsys.store.models import Event, Item, User

TYPES = {"view": 1.0, "add_to_cart": 4.0, "purchase": 8.0, "rating": 1.0}


def checkerboard(n: int = 20, density: float = 1.0, seed: int = 0) -> sp.csr_matrix:
    """implicit's test fixture: user u likes item i when u + i is even."""
    rng = np.random.default_rng(seed)
    rows, cols = np.nonzero((np.add.outer(np.arange(n), np.arange(n)) % 2 == 0) & (rng.random((n, n)) < density))
    return sp.csr_matrix((np.ones(rows.shape[0], dtype=np.float32), (rows, cols)), shape=(n, n))


# ---------------------------------------------------------------- id map
def test_idmap_rows_external_and_unknown(tmp_path: Path) -> None:
    m = IdMap(["b", "a", 7], kind="item")
    assert m.row("a") == 1 and m.row(7) == 2 and "7" in m
    assert m.rows(["7", "b"]).tolist() == [2, 0]
    assert m.external([1, 0]) == ["a", "b"]
    with pytest.raises(UnknownIdError, match="unknown item id 'zz'"):
        m.row("zz")
    with pytest.raises(UnknownIdError, match="unknown item id 'x'"):
        m.rows(["a", "x"])
    assert m.rows(["a", "x"], missing="skip").tolist() == [1, -1]
    with pytest.raises(UnknownIdError):
        m.external([3])
    m.save(tmp_path / "ids.json")
    assert IdMap.load(tmp_path / "ids.json") == m
    with pytest.raises(ValueError, match="more than once"):
        IdMap(["a", "a"])
    (tmp_path / "bad.json").write_text("{", encoding="utf-8")
    with pytest.raises(ArtifactError):
        IdMap.load(tmp_path / "bad.json")


# ---------------------------------------------------------------- weights, decay, repeats, confidence
def test_event_weights_types_values_and_unknown() -> None:
    types = np.array(["view", "purchase", "rating", "rating", "teleport"], dtype=object)
    values = np.array([np.nan, 3.0, 4.0, np.nan, 1.0])
    w, unknown = event_weights(types, values, TYPES, CFConfig())
    assert w.tolist() == [1.0, 8.0, 1.0, 1.0, 0.0]
    assert unknown == {"teleport": 1}
    w, _ = event_weights(types, values, TYPES, CFConfig(value_transform="linear"))
    assert w.tolist() == [1.0, 8.0, 4.0, 1.0, 0.0]  # purchase's value is not a rating: ignored
    w, _ = event_weights(types, values, TYPES, CFConfig(value_transform="threshold", value_threshold=4.5))
    assert w.tolist() == [1.0, 8.0, 0.0, 1.0, 0.0]
    w, _ = event_weights(types, values, TYPES, CFConfig(value_transform="log1p"))
    assert w[2] == pytest.approx(np.log1p(4.0))


def test_decay_half_life() -> None:
    day = 86_400
    ts = np.array([10 * day, 9 * day, 8 * day, 11 * day])
    assert decay_factors(ts, None).tolist() == [1, 1, 1, 1]
    f = decay_factors(ts, 1.0, reference_ts=10 * day)
    np.testing.assert_allclose(f, [1.0, 0.5, 0.25, 1.0])
    np.testing.assert_allclose(decay_factors(ts, 2.0), [0.5**0.5, 0.5, 0.5**1.5, 1.0], rtol=1e-6)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [("sum", [[5.0, 0, 8.0], [0, 1.0, 0]]), ("max", [[4.0, 0, 8.0], [0, 1.0, 0]]), ("last", [[1.0, 0, 8.0], [0, 1.0, 0]])],
)
def test_combine_repeats(rule: str, expected: list[list[float]]) -> None:
    user = np.array([0, 0, 0, 1, 1])
    item = np.array([0, 0, 2, 1, 1])
    weight = np.array([4.0, 1.0, 8.0, 1.0, 0.0])  # the zero-weight event is ignored
    ts = np.array([1, 5, 3, 2, 9])
    out = combine_events(user, item, weight, ts, (2, 3), rule)
    np.testing.assert_allclose(out.toarray(), expected)
    assert out.has_sorted_indices and (out.data > 0).all()
    with pytest.raises(ValueError, match="rule must be one of"):
        combine_events(user, item, weight, ts, (2, 3), "mean")


def test_confidence_alpha_none_bm25() -> None:
    w = sp.csr_matrix(np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 0.0], [3.0, 0.0, 1.0]], dtype=np.float32))
    np.testing.assert_allclose(apply_confidence(w, CFConfig(confidence="alpha", alpha=5.0)).toarray(), 5 * w.toarray())
    np.testing.assert_allclose(apply_confidence(w, CFConfig(confidence="none")).toarray(), w.toarray())
    cfg = CFConfig(confidence="bm25", alpha=2.0, bm25_k1=1.2, bm25_b=0.75)
    out = apply_confidence(w, cfg).toarray()
    dense = w.toarray()
    df = (dense > 0).sum(0)
    idf = np.log(3 / (1 + df)).clip(min=0) + 1e-3
    lengths = dense.sum(1)
    expect = np.zeros_like(dense)
    for u, i in zip(*np.nonzero(dense)):
        x = dense[u, i]
        expect[u, i] = 2.0 * x * 2.2 / (1.2 * (0.25 + 0.75 * lengths[u] / lengths.mean()) + x) * idf[i]
    np.testing.assert_allclose(out, expect, rtol=1e-5)
    # a new row weighed with the training statistics
    stats = bm25_stats(w)
    new = apply_confidence(w[[0]], cfg, stats).toarray()
    np.testing.assert_allclose(new, expect[[0]], rtol=1e-5)


# ---------------------------------------------------------------- SQL -> matrix
def _fill(engine: Engine, events: list[tuple[str, str, str, float | None, int]], n_items: int = 4) -> None:
    with engine.begin() as conn:
        conn.execute(insert(Item), [
            {"external_id": f"i{k}", "title": "", "description": "", "attributes": {}, "available": True, "content_hash": "x"}
            for k in range(n_items)
        ])
        users = sorted({e[0] for e in events})
        conn.execute(insert(User), [{"external_id": u, "attributes": {}} for u in users])
        item_ids = {r.external_id: r.id for r in conn.execute(Item.__table__.select())}
        user_ids = {r.external_id: r.id for r in conn.execute(User.__table__.select())}
        conn.execute(insert(Event), [
            {"event_key": f"k{n}", "user_id": user_ids[u], "item_id": item_ids[i], "event_type": t, "value": v, "ts": ts}
            for n, (u, i, t, v, ts) in enumerate(events)
        ])


EVENTS = [
    ("alice", "i0", "view", None, 100),
    ("alice", "i0", "purchase", None, 200),
    ("alice", "i2", "rating", 4.0, 150),
    ("bob", "i1", "add_to_cart", None, 300),
    ("bob", "i1", "view", None, 50),
    ("carol", "i3", "teleport", None, 10),  # unknown type: dropped, carol has no other event
]


def test_matrix_from_sql(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    _fill(engine, EVENTS)
    with caplog.at_level("WARNING"):
        m = matrix_from_sql(engine, CFConfig(), TYPES)
    assert "teleport" in caplog.text
    assert len(m.items) == 4 and m.items.ids.tolist() == ["i0", "i1", "i2", "i3"]
    assert m.users.ids.tolist() == ["alice", "bob"]
    dense = m.weights.toarray()
    np.testing.assert_allclose(dense, [[9.0, 0, 1.0, 0], [0, 5.0, 0, 0]])
    assert m.n_events == 5 and m.last_ts == 300

    last = matrix_from_sql(engine, CFConfig(combine="last", value_transform="linear"), TYPES)
    np.testing.assert_allclose(last.weights.toarray(), [[8.0, 0, 4.0, 0], [0, 4.0, 0, 0]])
    ref = 300 + 86_400
    decayed = matrix_from_sql(engine, CFConfig(half_life_days=1.0), TYPES, reference_ts=ref)

    def d(ts: int) -> float:
        return 0.5 ** ((ref - ts) / 86_400)

    expect = [[1 * d(100) + 8 * d(200), 0, 1 * d(150), 0], [0, 4 * d(300) + 1 * d(50), 0, 0]]
    np.testing.assert_allclose(decayed.weights.toarray(), expect, rtol=1e-5)


def test_matrix_from_empty_table(sqlite_engine: Engine) -> None:
    m = matrix_from_sql(sqlite_engine, CFConfig(), TYPES)
    assert m.weights.shape == (0, 0) and m.n_events == 0 and m.last_ts is None


# ---------------------------------------------------------------- factors
def test_als_learns_checkerboard_and_is_reproducible() -> None:
    x = checkerboard(20, density=0.7)
    cfg = CFConfig(factors=4, regularization=0.01, iterations=15, alpha=1.0)
    uf, itf = fit_factors(apply_confidence(x, cfg), cfg)
    scores = uf @ itf.T
    same = np.add.outer(np.arange(20), np.arange(20)) % 2 == 0
    assert scores[same].mean() > scores[~same].mean() + 0.5
    uf2, itf2 = fit_factors(apply_confidence(x, cfg), cfg)
    np.testing.assert_array_equal(uf, uf2)
    np.testing.assert_array_equal(itf, itf2)


def test_bpr_selectable_and_reproducible() -> None:
    x = checkerboard(20)
    cfg = CFConfig(model="bpr", factors=4, iterations=60, learning_rate=0.05, regularization=0.001)
    uf, itf = fit_factors(apply_confidence(x, cfg), cfg)
    assert itf.shape == (20, 5)  # implicit's item-bias column
    same = np.add.outer(np.arange(20), np.arange(20)) % 2 == 0
    scores = uf @ itf.T
    assert scores[same].mean() > scores[~same].mean()
    uf2, _ = fit_factors(apply_confidence(x, cfg), cfg)
    np.testing.assert_array_equal(uf, uf2)


def test_fold_in_matches_weighted_least_squares() -> None:
    """Oracle: the closed-form ALS user solve ``(Y'CY + reg I)^-1 Y'Cp`` in numpy."""
    rng = np.random.default_rng(1)
    items = rng.normal(size=(30, 5)).astype(np.float32)
    rows = sp.csr_matrix(np.where(rng.random((3, 30)) < 0.3, rng.integers(1, 4, (3, 30)), 0).astype(np.float32))
    cfg = CFConfig(factors=5, regularization=0.7)
    got = fold_in(items, rows, cfg)
    for r in range(3):
        c = rows[r].toarray().ravel()
        conf = np.where(c > 0, c, 1.0)  # implicit: confidence c on positives, 1 elsewhere
        p = (c > 0).astype(np.float64)
        a = items.T.astype(np.float64) @ (conf[:, None] * items) + 0.7 * np.eye(5)
        b = items.T.astype(np.float64) @ (conf * p)
        np.testing.assert_allclose(got[r], np.linalg.solve(a, b), rtol=1e-3, atol=1e-4)
    assert fold_in(items, sp.csr_matrix((0, 30), dtype=np.float32), cfg).shape == (0, 5)


def test_cfmodel_save_load_and_vector_for(tmp_path: Path) -> None:
    x = checkerboard(12)
    cfg = CFConfig(factors=3, confidence="bm25", regularization=0.01, alpha=10.0)
    users = IdMap([f"u{k}" for k in range(12)], "user")
    items = IdMap([f"i{k}" for k in range(12)], "item")
    model = CFModel.fit(x, users, items, cfg)
    model.save(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["kind"] == "cf" and manifest["config"]["confidence"] == "bm25" and "bm25.npz" in manifest["files"]
    back = CFModel.load(tmp_path / "m")
    np.testing.assert_array_equal(back.item_factors, model.item_factors)
    assert back.users == users and back.items == items and back.config == cfg
    np.testing.assert_allclose(back.bm25.idf, model.bm25.idf)  # type: ignore[union-attr]
    assert back.item_support.tolist() == [6] * 12 and back.warm.all()  # type: ignore[union-attr]
    vec = back.vector_for(["i0", "i2", "i4"])
    scores = back.scores(vec[None, :])[0]
    assert scores[[0, 2, 4, 6, 8]].mean() > scores[[1, 3, 5, 7]].mean()
    with pytest.raises(UnknownIdError):
        back.vector_for(["nope"])
    (tmp_path / "m" / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(ArtifactError, match="format"):
        CFModel.load(tmp_path / "m")


# ---------------------------------------------------------------- training from SQL, artifacts, CLI
def _config(tmp_path: Path, **cf: object) -> Config:
    return Config.model_validate({"data_dir": str(tmp_path / "data"), "event_types": TYPES, "cf": {"factors": 4, **cf}})


def _checkerboard_events(n: int = 16) -> list[tuple[str, str, str, float | None, int]]:
    x = checkerboard(n).tocoo()
    return [(f"u{u}", f"i{i}", "view", None, 1000 + k) for k, (u, i) in enumerate(zip(x.row, x.col))]


def test_train_from_sql_registers_reproducible_artifact(engine: Engine, tmp_path: Path) -> None:
    _fill(engine, _checkerboard_events(), n_items=18)  # i16 and i17 have no events
    config = _config(tmp_path)
    first = train_from_sql(engine, config, version="v1")
    second = train_from_sql(engine, config, version="v2")
    np.testing.assert_array_equal(first.model.item_factors, second.model.item_factors)
    assert (first.path / "manifest.json").is_file() and first.path == config.artifacts_path / "cf" / "v1"
    assert first.metrics["pairs"] == 128 and first.metrics["users"] == 16 and first.metrics["items"] == 18
    assert first.model.warm.tolist() == [True] * 16 + [False] * 2
    record = active_artifact(engine, "cf")
    assert record is not None and record.version == "v2" and record.metrics["pairs"] == 128
    assert record.config["cf"]["factors"] == 4
    assert [r.version for r in list_artifacts(engine, "cf")] == ["v1", "v2"]
    loaded = load_cf(engine, "v1")
    np.testing.assert_array_equal(loaded.user_factors, first.model.user_factors)
    with pytest.raises(ArtifactError, match="exists already"):
        train_from_sql(engine, config, version="v1")


def test_train_needs_events(sqlite_engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(RecsysError, match="no events to train on"):
        train_from_sql(sqlite_engine, _config(tmp_path), version="v")
    with pytest.raises(ArtifactError, match="no active cf artifact"):
        load_cf(sqlite_engine)


def test_cli_train(tmp_path: Path) -> None:
    from recsys.cli import cli
    from recsys.store.db import make_engine, upgrade

    db = tmp_path / "data" / "recsys.sqlite"
    eng = make_engine(f"sqlite:///{db}")
    upgrade(eng)
    _fill(eng, _checkerboard_events(), n_items=16)
    eng.dispose()
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(f"data_dir: {tmp_path / 'data'}\ncf:\n  factors: 3\n  iterations: 40\n", encoding="utf-8")
    res = CliRunner().invoke(cli, ["--config", str(cfg_file), "train", "--cf-only", "--model", "bpr", "--version", "b1", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["version"] == "b1" and out["metrics"]["pairs"] == 128
    manifest = json.loads((Path(out["path"]) / "manifest.json").read_text())
    assert manifest["model"] == "bpr" and manifest["factors"] == 4
    res = CliRunner().invoke(cli, ["--config", str(cfg_file), "train", "--cf-only", "--version", "a1"])
    assert res.exit_code == 0, res.output
    assert "trained als (3 factors) on 16 users x 16 items" in res.output and "(active)" in res.output
    # without --cf-only: the feed model (the hybrid), its chosen weights, registered as kind "feed"
    res = CliRunner().invoke(cli, ["--config", str(cfg_file), "train", "--no-content", "--version", "f1", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["kind"] == "feed" and out["version"] == "f1" and out["metrics"]["pairs"] == 128
    assert set(out["params"]) >= {"warm_cf", "warm_pop", "cold_offset"} and out["encoders"] == {}
    from recsys.recommend.model import FeedModel

    loaded = FeedModel.load(out["path"])
    assert loaded.n_items == 16 and loaded.components.content is None and loaded.version == "f1"
