"""Retrieval indexes: the Retriever contract (exact and ScaNN), ScaNN vs exact oracle, persistence,
atomic publish and hot reload. Tiny synthetic data; the whole file runs in a few seconds."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from recsys.errors import ArtifactError, ConfigError
from recsys.index.base import Retriever
from recsys.index.exact import ExactRetriever
from recsys.index.factory import build_index, load_retriever, measure_recall, scann_available
from recsys.index.filters import top_k
from recsys.index.manifest import MANIFEST, read_manifest
from recsys.index.publish import (
    CURRENT,
    IndexHandle,
    activate,
    active_version,
    list_versions,
    load_active,
    prune,
    publish,
)
from recsys.index.scann import ScannRetriever
from recsys.index.settings import IndexConfig
from recsys.index.synthetic import clustered_vectors, split_queries

N, DIM = 600, 16
needs_scann = pytest.mark.skipif(not scann_available(), reason="scann is not installed")

# Thresholds scaled down so each ScaNN regime is reached with a few thousand rows.
BRUTE = IndexConfig(backend="scann", recall_sample=50)
AH = IndexConfig(backend="scann", recall_sample=50, brute_force_below=300, partition_above=100_000)
TREE = IndexConfig(backend="scann", recall_sample=50, brute_force_below=300, partition_above=500)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return clustered_vectors(N, DIM, seed=3)


def exact_top(vectors: np.ndarray, q: np.ndarray, k: int, rows: np.ndarray | None = None) -> np.ndarray:
    rows = np.arange(len(vectors)) if rows is None else rows
    s = vectors[rows] @ q
    return rows[np.argsort(-s, kind="stable")[:k]]


class RetrieverContract:
    """Every Retriever implementation must pass these (implicit's RecommenderBaseTestMixin style)."""

    def make(self, vectors: np.ndarray) -> Retriever:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    def index(self, vectors: np.ndarray) -> Retriever:
        return self.make(vectors)

    def test_is_a_retriever(self, index: Retriever) -> None:
        assert isinstance(index, Retriever)
        assert index.size == N and index.dim == DIM

    def test_single_query_shapes_and_scores(self, index: Retriever, vectors: np.ndarray) -> None:
        ids, scores = index.search(vectors[7], 10)
        assert ids.shape == (10,) and ids.dtype == np.int64
        assert scores.shape == (10,) and scores.dtype == np.float32
        assert np.all(np.diff(scores) <= 1e-6)
        np.testing.assert_allclose(scores, vectors[ids] @ vectors[7], rtol=1e-4, atol=1e-5)
        assert ids[0] == 7  # a row is its own nearest neighbour
        assert len(set(ids.tolist())) == 10

    def test_batched_shapes_match_single(self, index: Retriever, vectors: np.ndarray) -> None:
        q = vectors[[1, 50, 99]]
        ids, scores = index.search(q, 5)
        assert ids.shape == (3, 5) and scores.shape == (3, 5)
        for row in range(3):
            single, _ = index.search(q[row], 5)
            np.testing.assert_array_equal(ids[row], single)
        assert np.all(np.diff(scores, axis=1) <= 1e-6)

    def test_close_to_exact(self, index: Retriever, vectors: np.ndarray) -> None:
        _, q = split_queries(clustered_vectors(N + 20, DIM, seed=3), 20, seed=1)
        ids, _ = index.search(q, 10)
        hits = sum(len(np.intersect1d(ids[i], exact_top(vectors, q[i], 10))) for i in range(len(q)))
        assert hits / (10 * len(q)) >= 0.9

    def test_k_larger_than_catalogue(self, index: Retriever, vectors: np.ndarray) -> None:
        ids, scores = index.search(vectors[3], N + 50)
        assert sorted(ids.tolist()) == list(range(N))
        assert np.all(np.diff(scores) <= 1e-6)
        bids, bscores = index.search(vectors[:2], N + 50)
        assert bids.shape == (2, N) and (bids >= 0).all() and np.isfinite(bscores).all()

    def test_shared_allow_mask(self, index: Retriever, vectors: np.ndarray) -> None:
        allow = np.zeros(N, dtype=bool)
        allow[::3] = True
        ids, _ = index.search(vectors[:4], 10, allow=allow)
        assert ids.shape == (4, 10) and allow[ids].all()
        single, _ = index.search(vectors[5], 10, allow=allow)
        assert len(single) == 10 and allow[single].all()

    def test_selective_mask_returns_all_allowed_rows(self, index: Retriever, vectors: np.ndarray) -> None:
        allow = np.zeros(N, dtype=bool)
        allow[[4, 200, 401]] = True
        ids, scores = index.search(vectors[0], 10, allow=allow)
        np.testing.assert_array_equal(ids, exact_top(vectors, vectors[0], 10, np.array([4, 200, 401])))
        bids, bscores = index.search(vectors[:2], 10, allow=allow)
        assert bids.shape == (2, 10)
        assert (bids[:, 3:] == -1).all() and np.isneginf(bscores[:, 3:]).all()
        assert set(bids[0, :3].tolist()) == {4, 200, 401}

    def test_nothing_allowed(self, index: Retriever, vectors: np.ndarray) -> None:
        ids, scores = index.search(vectors[0], 5, allow=np.zeros(N, dtype=bool))
        assert ids.shape == (0,) and scores.shape == (0,)

    def test_per_query_allow_mask(self, index: Retriever, vectors: np.ndarray) -> None:
        allow = np.zeros((2, N), dtype=bool)
        allow[0, :300] = True
        allow[1, 300:] = True
        ids, _ = index.search(vectors[[10, 20]], 8, allow=allow)
        assert (ids[0] < 300).all() and (ids[1] >= 300).all()

    def test_exclude(self, index: Retriever, vectors: np.ndarray) -> None:
        top, _ = index.search(vectors[9], 5)
        ids, _ = index.search(vectors[9], 5, exclude=top[:3])
        assert len(ids) == 5 and not set(ids.tolist()) & set(top[:3].tolist())
        per_query, _ = index.search(vectors[[9, 11]], 5, exclude=[[9], [11, 12]])
        assert 9 not in per_query[0] and not {11, 12} & set(per_query[1].tolist())
        second = int(top[1])  # per query, not shared: each row keeps what the other excludes
        as_array, _ = index.search(vectors[[9, 9]], 5, exclude=np.array([[9], [second]]))
        assert as_array[0, 0] == second and as_array[1, 0] == 9

    def test_invalid_arguments(self, index: Retriever, vectors: np.ndarray) -> None:
        with pytest.raises(ValueError, match="dimension"):
            index.search(np.zeros(DIM + 1, dtype=np.float32), 5)
        with pytest.raises(ValueError, match="k must be"):
            index.search(vectors[0], 0)
        with pytest.raises(ValueError, match="allow must have shape"):
            index.search(vectors[0], 5, allow=np.ones(N - 1, dtype=bool))
        with pytest.raises(ValueError, match="boolean"):
            index.search(vectors[0], 5, allow=np.ones(N, dtype=int))
        with pytest.raises(ValueError, match="outside"):
            index.search(vectors[0], 5, exclude=[N])
        with pytest.raises(ValueError, match="one per query"):
            index.search(vectors[:3], 5, exclude=[[1], [2, 3]])
        with pytest.raises(ValueError, match="NaN"):
            index.search(np.full(DIM, np.nan, dtype=np.float32), 5)

    def test_add_and_update_without_rebuild(self, vectors: np.ndarray) -> None:
        index = self.make(vectors)
        rng = np.random.default_rng(9)
        new = rng.standard_normal((3, DIM)).astype(np.float32)
        new /= np.linalg.norm(new, axis=1, keepdims=True)
        ids = index.add(new)
        np.testing.assert_array_equal(ids, [N, N + 1, N + 2])
        assert index.size == N + 3
        found, scores = index.search(new[1], 5)
        assert found[0] == N + 1 and scores[0] == pytest.approx(1.0, abs=1e-5)
        allow = np.ones(N + 3, dtype=bool)
        allow[N + 1] = False
        assert N + 1 not in index.search(new[1], 5, allow=allow)[0]
        assert N + 1 not in index.search(new[1], 5, exclude=[N + 1])[0]
        # Replace row 5 with a new vector: the old one is no longer found, the new one is.
        old = vectors[5].copy()
        index.update([5], new[2:3] * -1)
        assert 5 not in index.search(old, 10)[0]
        got, s = index.search(-new[2], 3)
        assert got[0] == 5 and s[0] == pytest.approx(1.0, abs=1e-5)
        full = index.all_vectors()
        assert full.shape == (N + 3, DIM)
        np.testing.assert_allclose(full[5], -new[2])
        np.testing.assert_allclose(full[N:], new)
        with pytest.raises(ValueError, match="existing rows"):
            index.update([N + 3], new[:1])

    def test_save_load_round_trip(self, vectors: np.ndarray, tmp_path: Path) -> None:
        index = self.make(vectors)
        index.add(vectors[:2] * -1)
        q = clustered_vectors(12, DIM, seed=11)
        before = index.search(q, 10)
        index.save(tmp_path / "idx")
        loaded = load_retriever(tmp_path / "idx")
        assert type(loaded) is type(index) and loaded.size == N + 2
        after = loaded.search(q, 10)
        np.testing.assert_array_equal(before[0], after[0])
        np.testing.assert_array_equal(before[1], after[1])
        manifest = read_manifest(tmp_path / "idx")
        assert manifest["backend"] == index.backend and manifest["n"] == N + 2 and manifest["dim"] == DIM
        assert manifest["n_buffered"] == 2 and "config" in manifest and "created" in manifest


class TestExactRetriever(RetrieverContract):
    def make(self, vectors: np.ndarray) -> Retriever:
        return ExactRetriever(vectors)

    def test_chunked_batches_match(self, vectors: np.ndarray) -> None:
        q = vectors[:25]
        whole = ExactRetriever(vectors).search(q, 7)
        chunked = ExactRetriever(vectors, IndexConfig(exact_chunk_elements=N * 4)).search(q, 7)
        np.testing.assert_array_equal(whole[0], chunked[0])

    def test_search_rows_selective_and_broad_masks(self, vectors: np.ndarray) -> None:
        from recsys.index.exact import search_rows

        q = vectors[8]
        for frac in (0.05, 0.8):  # gathers the allowed rows / scores all rows and masks
            allow = np.random.default_rng(2).random(N) < frac
            blocked = np.flatnonzero(allow)[:3]
            ids, scores = search_rows(vectors, q, 10, allow, blocked)
            keep = allow.copy()
            keep[blocked] = False
            np.testing.assert_array_equal(ids, exact_top(vectors, q, 10, np.flatnonzero(keep)))
            np.testing.assert_allclose(scores, vectors[ids] @ q, rtol=1e-5)

    def test_matches_numpy_oracle(self, vectors: np.ndarray) -> None:
        ids, _ = ExactRetriever(vectors).search(vectors[42], 10)
        np.testing.assert_array_equal(ids, exact_top(vectors, vectors[42], 10))


@needs_scann
class TestScannBruteForce(RetrieverContract):
    def make(self, vectors: np.ndarray) -> Retriever:
        r = build_index(vectors, BRUTE)
        assert r.info["params"]["mode"] == "brute_force"
        return r


@needs_scann
class TestScannAH(RetrieverContract):
    def make(self, vectors: np.ndarray) -> Retriever:
        r = build_index(vectors, AH)
        assert r.info["params"]["mode"] == "ah"
        return r


@needs_scann
class TestScannTree(RetrieverContract):
    def make(self, vectors: np.ndarray) -> Retriever:
        r = build_index(vectors, TREE)
        assert r.info["params"]["mode"] == "tree_ah"
        return r


# --------------------------------------------------------------------------- ScaNN specifics


def test_params_by_catalogue_size() -> None:
    from recsys.index.scann import choose_params

    cfg = IndexConfig()
    assert choose_params(10, 128, cfg).mode == "brute_force"
    assert choose_params(19_999, 128, cfg).mode == "brute_force"
    ah = choose_params(50_000, 128, cfg)
    assert ah.mode == "ah" and ah.reorder == cfg.reorder and ah.num_leaves is None
    tree = choose_params(1_000_000, 128, cfg)
    assert tree.mode == "tree_ah" and tree.num_leaves == 1000 and tree.leaves_to_search == 30
    assert tree.training_sample == cfg.training_sample
    pinned = choose_params(1_000_000, 128, IndexConfig(num_leaves=2000, leaves_to_search=77, reorder=99))
    assert (pinned.num_leaves, pinned.leaves_to_search, pinned.reorder) == (2000, 77, 99)
    assert choose_params(100, 128, IndexConfig(mode="tree_ah")).mode == "brute_force"  # too few rows for AH
    assert choose_params(30_000, 128, IndexConfig(mode="brute_force")).mode == "brute_force"


@needs_scann
@pytest.mark.parametrize(("cfg", "mode"), [(BRUTE, "brute_force"), (AH, "ah"), (TREE, "tree_ah")])
def test_scann_recall_vs_exact_oracle(cfg: IndexConfig, mode: str) -> None:
    db, q = split_queries(clustered_vectors(4000, 32, seed=5), 200, seed=6)
    index = build_index(db, cfg)
    assert index.info["params"]["mode"] == mode
    assert measure_recall(index, db, k=10, sample=200, queries=q) >= 0.95
    assert index.info["recall_at_k"] >= 0.95  # measured at build, on indexed rows
    assert 0.0 <= index.info["recall_at_k"] <= 1.0
    # Deep candidate lists (a reranker's input) stay accurate: the AH shortlist widens with k.
    assert measure_recall(index, db, k=200, sample=50, queries=q) >= 0.95


@needs_scann
def test_oracle_detects_a_poor_index(caplog: pytest.LogCaptureFixture) -> None:
    db, q = split_queries(clustered_vectors(4000, 32, seed=5), 200, seed=6)
    with caplog.at_level(logging.WARNING, logger="recsys.index.factory"):
        bad = build_index(db, TREE.model_copy(update={"leaves_to_search": 1, "min_leaves_to_search": 1, "reorder": 10}))
    assert bad.info["params"]["leaves_to_search"] == 1
    assert measure_recall(bad, db, k=10, queries=q) < 0.95
    assert bad.info["recall_at_k"] < 0.9 and "recall@10 vs exact is only" in caplog.text


@needs_scann
def test_filtered_search_falls_back_to_exact(vectors: np.ndarray) -> None:
    cfg = AH.model_copy(update={"filter_exact_below": 0, "filter_overfetch": 1.0, "filter_max_fetch": 10_000})
    index = build_index(vectors, cfg)
    assert isinstance(index, ScannRetriever)
    q = vectors[0]
    far = np.argsort(vectors @ q)[:100]  # the 100 rows least similar to q: ScaNN's candidates miss them
    allow = np.zeros(N, dtype=bool)
    allow[far] = True
    before = index.stats["exact_fallback"]
    ids, _ = index.search(q, 10, allow=allow)
    np.testing.assert_array_equal(ids, exact_top(vectors, q, 10, np.sort(far)))
    assert index.stats["exact_fallback"] == before + 1
    half = np.random.default_rng(0).random(N) < 0.5
    ids, _ = index.search(q, 10, allow=half)
    assert index.stats["filtered"] >= 1 and half[ids].all() and len(ids) == 10


@needs_scann
def test_load_with_query_time_config(vectors: np.ndarray, tmp_path: Path) -> None:
    build_index(vectors, AH).save(tmp_path / "i")
    allow = np.ones(N, dtype=bool)
    allow[::2] = False
    saved = load_retriever(tmp_path / "i")  # 300 allowed rows <= filter_exact_below (2,000): exact
    assert isinstance(saved, ScannRetriever)
    saved.search(vectors[0], 5, allow=allow)
    assert saved.stats["exact_fallback"] == 1 and saved.stats["filtered"] == 0
    over = load_retriever(tmp_path / "i", cfg=AH.model_copy(update={"filter_exact_below": 0}))
    assert isinstance(over, ScannRetriever)
    assert over.params == saved.params  # built parameters come from the manifest
    over.search(vectors[0], 5, allow=allow)  # now over-fetched from ScaNN
    assert over.stats["filtered"] == 1 and over.stats["exact_fallback"] == 0


@needs_scann
def test_tiny_catalogues() -> None:
    for n in (1, 2, 5):
        x = clustered_vectors(n, 8, seed=n)
        index = build_index(x, IndexConfig(backend="scann"))
        assert index.backend == "scann"
        ids, scores = index.search(x[0], 10)
        assert sorted(ids.tolist()) == list(range(n)) and ids[0] == 0
        bids, _ = index.search(x, 3)
        assert bids.shape == (n, min(3, n))


def test_build_index_backends(vectors: np.ndarray, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    assert isinstance(build_index(vectors, IndexConfig(backend="exact")), ExactRetriever)
    empty = build_index(np.empty((0, DIM), dtype=np.float32), IndexConfig())
    assert empty.backend == "exact" and empty.search(vectors[0], 5)[0].shape == (0,)
    import recsys.index.factory as factory

    monkeypatch.setattr(factory, "scann_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="recsys.index.factory"):
        fallback = build_index(vectors, IndexConfig(backend="auto"))
    assert fallback.backend == "exact" and "scann is not importable" in caplog.text
    with pytest.raises(ConfigError, match="scann"):
        build_index(vectors, IndexConfig(backend="scann"))
    with pytest.raises(ValueError, match="2-D"):
        build_index(vectors[0], IndexConfig(backend="exact"))


# --------------------------------------------------------------------------- publish and reload


@pytest.fixture
def small_index(vectors: np.ndarray) -> Retriever:
    return build_index(vectors, AH)


@needs_scann
def test_publish_and_load_active(small_index: Retriever, vectors: np.ndarray, tmp_path: Path) -> None:
    root = tmp_path / "index-items"
    v1 = publish(small_index, root, version="v1")
    assert v1 == "v1" and active_version(root) == "v1"
    assert (root / CURRENT).read_text().strip() == "v1"
    assert list_versions(root) == ["v1"]
    manifest = json.loads((root / "v1" / MANIFEST).read_text())
    assert manifest["version"] == "v1" and manifest["backend"] == "scann"
    assert manifest["recall_at_10"] == small_index.info["recall_at_k"]
    assert manifest["params"]["mode"] == "ah" and manifest["config"]["partition_above"] == 100_000
    loaded = load_active(root)  # ScaNN assets were written with relative paths, then the folder renamed
    np.testing.assert_array_equal(loaded.search(vectors[:5], 10)[0], small_index.search(vectors[:5], 10)[0])
    with pytest.raises(ArtifactError, match="already exists"):
        publish(small_index, root, version="v1")


@needs_scann
def test_failed_build_keeps_previous_version(small_index: Retriever, vectors: np.ndarray, tmp_path: Path) -> None:
    root = tmp_path / "index-items"
    publish(small_index, root, version="v1")
    seen: dict[str, object] = {}

    class Broken(ExactRetriever):
        def save(self, directory: str | Path) -> None:
            super().save(directory)  # everything written, manifest included...
            seen["final_visible"] = (root / "v2").exists()
            seen["active"] = active_version(root)
            raise OSError("disk full")  # ...then the publish fails

    with pytest.raises(OSError, match="disk full"):
        publish(Broken(vectors), root, version="v2")
    assert seen == {"final_visible": False, "active": "v1"}  # never visible while being written
    assert active_version(root) == "v1" and list_versions(root) == ["v1"]
    assert not any(p.name.startswith("v2") for p in root.iterdir())
    assert load_active(root).backend == "scann"


def test_incomplete_directory_is_not_loadable(tmp_path: Path, vectors: np.ndarray) -> None:
    ExactRetriever(vectors).save(tmp_path / "x")
    (tmp_path / "x" / MANIFEST).unlink()
    with pytest.raises(ArtifactError, match="incomplete"):
        load_retriever(tmp_path / "x")
    with pytest.raises(ArtifactError, match="no index published"):
        load_active(tmp_path / "nothing")


def test_index_handle_picks_up_new_version(vectors: np.ndarray, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "index-items"
    publish(ExactRetriever(vectors), root, version="v1")
    loads: list[Path] = []

    def loader(path: Path) -> Retriever:
        loads.append(path)
        return load_retriever(path)

    now = [0.0]
    handle = IndexHandle(root, check_interval_s=5.0, loader=loader, clock=lambda: now[0])
    assert handle.version == "v1" and len(loads) == 1
    assert handle.refresh_if_changed(force=True) is False and len(loads) == 1  # unchanged: no load
    shifted = vectors[::-1].copy()
    publish(ExactRetriever(shifted), root, version="v2")
    assert handle.refresh_if_changed() is False  # within the check interval: not even a stat
    now[0] = 6.0
    assert handle.refresh_if_changed() is True and handle.version == "v2"
    np.testing.assert_array_equal(handle.retriever.search(vectors[0], 1)[0], [N - 1])
    # A broken new version is logged and skipped; the handle keeps serving v2.
    publish(ExactRetriever(vectors), root, version="v3")
    (root / "v3" / MANIFEST).write_text("{not json")
    with caplog.at_level(logging.ERROR, logger="recsys.index.publish"):
        assert handle.refresh_if_changed(force=True) is False
    assert handle.version == "v2" and "cannot load index version v3" in caplog.text
    n_loads = len(loads)
    assert handle.refresh_if_changed(force=True) is False and len(loads) == n_loads  # not retried
    activate(root, "v1")  # roll back
    assert handle.refresh_if_changed(force=True) is True and handle.version == "v1"


def test_prune_keeps_active(vectors: np.ndarray, tmp_path: Path) -> None:
    root = tmp_path / "idx"
    for v in ("a1", "a2", "a3", "a4"):
        publish(ExactRetriever(vectors[:10]), root, version=v)
    activate(root, "a1")
    (root / "stale.tmp").mkdir()
    removed = prune(root, keep=2)
    assert removed == ["a2", "a3"] and list_versions(root) == ["a1", "a4"]
    assert not (root / "stale.tmp").exists() and active_version(root) == "a1"


def test_publish_registers_active_version_in_sql(vectors: np.ndarray, tmp_path: Path) -> None:
    from recsys.store.artifacts import active_artifact, list_artifacts
    from recsys.store.db import make_engine, upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    root = tmp_path / "index-items"
    publish(ExactRetriever(vectors), root, version="v1", engine=engine, kind="index-items")
    publish(ExactRetriever(vectors), root, version="v2", engine=engine, kind="index-items")
    record = active_artifact(engine, "index-items")
    assert record is not None and record.version == "v2" and record.path == str((root / "v2").resolve())
    assert record.metrics["n"] == N and record.metrics["recall_at_10"] == 1.0
    assert [a.active for a in list_artifacts(engine, "index-items")] == [False, True]
    activate(root, "v1", engine=engine, kind="index-items")
    assert active_artifact(engine, "index-items").version == "v1" and active_version(root) == "v1"  # type: ignore[union-attr]
    # A registry that cannot be written leaves CURRENT where it was.
    bare = make_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    with pytest.raises(Exception, match="artifacts"):
        publish(ExactRetriever(vectors), root, version="v3", engine=bare, kind="index-items")
    assert active_version(root) == "v1" and list_versions(root) == ["v1", "v2"] and not (root / "v3").exists()


@needs_scann
def test_cli_build_list_show(vectors: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from recsys.cli import cli

    np.save(tmp_path / "vecs.npy", vectors)
    (tmp_path / "config.yaml").write_text(f"data_dir: {tmp_path / 'data'}\nindex:\n  recall_sample: 20\n")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    out = runner.invoke(cli, ["index", "build", "vecs.npy", "--no-register", "--version", "b1"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output)
    assert summary["version"] == "b1" and summary["n"] == N and summary["backend"] == "scann"
    root = tmp_path / "data" / "artifacts" / "index-items"
    assert active_version(root) == "b1" and os.path.isdir(root / "b1")
    listed = runner.invoke(cli, ["index", "list"])
    assert listed.exit_code == 0 and listed.output.startswith("* b1")
    shown = runner.invoke(cli, ["index", "show"])
    assert json.loads(shown.output)["version"] == "b1"


def test_concurrent_search_and_add(vectors: np.ndarray) -> None:
    import threading

    index = ExactRetriever(vectors)
    errors: list[BaseException] = []

    def searcher() -> None:
        try:
            for i in range(200):
                ids, scores = index.search(vectors[i % N], 5)
                assert len(ids) == 5 and np.all(np.diff(scores) <= 1e-6) and (ids < index.size).all()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    for j in range(50):
        index.add(vectors[j : j + 1] * -1)
        index.update([j], vectors[j + 1 : j + 2])
    for t in threads:
        t.join()
    assert not errors and index.size == N + 50 and index.buffer_size == 100


def test_top_k_ties_and_padding() -> None:
    scores = np.array([[1.0, 3.0, 3.0, -np.inf, 2.0]], dtype=np.float32)
    ids, vals = top_k(scores, 5)
    np.testing.assert_array_equal(ids, [[1, 2, 4, 0, -1]])
    assert np.isneginf(vals[0, -1])


def test_concurrent_publishers_leave_the_registry_and_current_naming_one_version(
    vectors: np.ndarray, tmp_path: Path
) -> None:
    """Serving processes may publish at once: the registry row and CURRENT are switched together."""
    import threading

    from recsys.store.artifacts import active_artifact
    from recsys.store.db import make_engine, upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(engine)
    root = tmp_path / "ix"
    errors: list[BaseException] = []

    def publish_some(t: int) -> None:
        try:
            for i in range(5):
                publish(ExactRetriever(vectors[:50]), root, version=f"t{t}-{i}", engine=engine, kind="index-items")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=publish_some, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert active_artifact(engine, "index-items").version == active_version(root)  # type: ignore[union-attr]
    engine.dispose()


# --------------------------------------------------------------------------- neighbour table
@pytest.mark.parametrize("backend", ["exact", pytest.param("scann", marks=needs_scann)])
def test_the_neighbour_table_holds_each_rows_search_without_itself(vectors: np.ndarray, backend: str) -> None:
    from recsys.index.neighbours import build_neighbours

    index = build_index(vectors, IndexConfig(backend=backend, recall_sample=50))
    table = build_neighbours(index, 12, batch=100)
    assert table.ids.shape == (N, 12) and table.ids.dtype == np.int32
    for row in range(0, N, 7):
        ids, scores = index.search(vectors[row], 12, exclude=[row])
        assert row not in table.ids[row]
        np.testing.assert_array_equal(table.ids[row], ids)
        np.testing.assert_allclose(table.scores[row], scores, rtol=1e-5, atol=1e-6)
        got = table.lookup(row, 5)
        assert got is not None
        np.testing.assert_array_equal(got[0], ids[:5])


def test_neighbour_lookups_with_filters_equal_a_filtered_search_or_defer(vectors: np.ndarray) -> None:
    from recsys.index.neighbours import build_neighbours

    index = ExactRetriever(vectors)
    table = build_neighbours(index, 20)
    allow = np.arange(N) % 3 != 0
    answered = 0
    for row in range(0, N, 11):
        excl = [int(table.ids[row, 0]), int(table.ids[row, 4])]
        for kw in ({"allow": allow}, {"exclude": excl}, {"allow": allow, "exclude": excl}):
            got = table.lookup(row, 8, **kw)
            assert got is not None  # 20 stored, at most 2 excluded and a third masked: 8 survive
            want, _ = index.search(vectors[row], 8, allow=kw.get("allow"), exclude=[row, *kw.get("exclude", [])])
            np.testing.assert_array_equal(got[0], want)
            answered += 1
        rare = np.zeros(N, dtype=bool)
        rare[np.arange(row % 50, N, 50)] = True  # 2% of the rows: the stored 20 cannot hold 8 of them
        if table.lookup(row, 8, allow=rare) is None:
            continue
        answered += 1
        got = table.lookup(row, 8, allow=rare)
        want, _ = index.search(vectors[row], 8, allow=rare, exclude=[row])
        np.testing.assert_array_equal(got[0], want)
    assert table.lookup(0, 21) is None  # wider than the table: the caller searches
    assert answered >= 3 * len(range(0, N, 11))


def test_a_complete_neighbour_list_answers_any_k_and_filter() -> None:
    from recsys.index.neighbours import build_neighbours

    small = clustered_vectors(6, DIM, seed=5)
    index = ExactRetriever(small)
    table = build_neighbours(index, 10)  # 5 others per row: every list is complete, -1 padded
    assert (table.ids[:, 5:] == -1).all()
    ids, _ = table.lookup(2, 10)
    assert sorted(ids.tolist()) == [0, 1, 3, 4, 5]
    allow = np.array([True, False, True, False, True, True])
    ids, _ = table.lookup(2, 10, allow=allow, exclude=[5])
    np.testing.assert_array_equal(ids, index.search(small[2], 10, allow=allow, exclude=[2, 5])[0])


@pytest.mark.parametrize("backend", ["exact", pytest.param("scann", marks=needs_scann)])
def test_the_neighbour_table_is_published_and_loaded_with_its_index(
    vectors: np.ndarray, tmp_path: Path, backend: str
) -> None:
    from recsys.index.neighbours import IDS_FILE, build_neighbours

    index = build_index(vectors, IndexConfig(backend=backend, recall_sample=50))
    index.neighbours = build_neighbours(index, 8)
    version = publish(index, tmp_path / "ix")
    assert (tmp_path / "ix" / version / IDS_FILE).is_file()
    loaded = load_active(tmp_path / "ix")
    assert not loaded.neighbours.ids.flags.owndata and not loaded.neighbours.ids.flags.writeable  # mapped
    np.testing.assert_array_equal(np.asarray(loaded.neighbours.ids), index.neighbours.ids)
    publish(build_index(vectors, IndexConfig(backend=backend, recall_sample=50)), tmp_path / "ix")
    assert load_active(tmp_path / "ix").neighbours is None  # a version without a table loads without one


@pytest.mark.parametrize("backend", ["exact", pytest.param("scann", marks=needs_scann)])
def test_neighbours_of_merges_the_side_buffer_and_equals_a_search(vectors: np.ndarray, backend: str) -> None:
    """After add() / update(), table answers skip the replaced rows and merge the buffered ones: the same
    rows as a search over the current vectors."""
    from recsys.index.neighbours import build_neighbours

    index = build_index(vectors, IndexConfig(backend=backend, recall_sample=50))
    index.neighbours = build_neighbours(index, 15)
    rng = np.random.default_rng(0)
    near = index.neighbours.ids[10, :3].astype(np.int64)  # rows 10's table lists: replace them, add copies
    moved = clustered_vectors(3, DIM, seed=9)
    index.update(near, moved)
    added = index.add(vectors[[10, 20, 30]] * np.float32(0.999) + moved * np.float32(0.01))
    current = index.all_vectors()
    allow = rng.random(index.size) < 0.8
    with pytest.raises(ValueError, match="side buffer"):
        build_neighbours(index, 5)
    for row in [10, 20, 30, 100, 599, int(near[0]), int(added[1])]:
        for kw in ({}, {"allow": allow}, {"exclude": [int(added[0])]}):
            got, got_scores = index.neighbours_of(row, 6, **kw)
            want, want_scores = index.search(current[row], 6, allow=kw.get("allow"),
                                             exclude=[row, *kw.get("exclude", [])])
            np.testing.assert_array_equal(got, want)
            np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-6)
    assert int(added[0]) in index.neighbours_of(10, 3)[0]  # the new near-copy of row 10 is its neighbour


def test_apply_rows_buffers_a_small_change_and_refuses_a_big_one(vectors: np.ndarray) -> None:
    index = ExactRetriever(vectors)
    grown = np.vstack([vectors, clustered_vectors(4, DIM, seed=11)])
    grown[[5, 50]] = clustered_vectors(2, DIM, seed=12)
    assert index.apply_rows(grown, max_buffered=10)
    assert index.size == N + 4 and index.buffer_size == 6
    np.testing.assert_array_equal(index.all_vectors(), grown)
    assert index.apply_rows(grown, max_buffered=10) and index.buffer_size == 6  # nothing new: nothing buffered
    again = grown.copy()
    again[5] = vectors[5]  # a replaced row changed back
    assert index.apply_rows(again, max_buffered=10)
    np.testing.assert_array_equal(index.all_vectors(), again)
    shifted = np.vstack([again[1:], again[:1]])  # another row order: every row differs
    assert not index.apply_rows(shifted, max_buffered=10)
    assert not index.apply_rows(again[:-1], max_buffered=10)  # fewer rows
    np.testing.assert_array_equal(index.all_vectors(), again)  # refused: untouched


FORK_CHILD = """
import gc, os, sys
import numpy as np
from recsys.index.scann import ScannRetriever
from recsys.index.settings import IndexConfig
from recsys.index.synthetic import clustered_vectors

vecs = clustered_vectors(2000, 16, seed=0)
index = ScannRetriever.build(vecs, IndexConfig(backend="scann", recall_sample=50, brute_force_below=300))
with index.batch_threads(2):  # the searcher gets its thread pool, as a neighbour table build gives it
    index.search(vecs[:8], 5)
pid = os.fork()
if pid == 0:  # a worker forked from a preloaded gunicorn master
    ids, _ = index.search(vecs[:1], 5)
    del index
    gc.collect()  # the worker's first reload drops the inherited state
    sys.exit(0 if int(ids[0][0]) == 0 else 3)  # a normal interpreter exit
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status) % 256)
"""


@needs_scann
def test_a_forked_child_searches_and_drops_an_inherited_scann_index() -> None:
    """A ScaNN searcher made before a ``fork`` (gunicorn's preloaded app) is searched in the child, dropped
    and outlived by the child's exit without aborting it (its destructor would join threads that only
    exist in the parent)."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    done = subprocess.run([sys.executable, "-c", FORK_CHILD], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=60)  # without the fix the child aborts, or hangs joining
    assert done.returncode == 0, f"child exit {done.returncode}\n{done.stderr[-2000:]}"
