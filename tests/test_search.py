"""Library-level product search: exact top-k, filters, text/image/combined queries, wiring from SQL."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import Engine, insert, update

from recsys.align.fusion import fuse_embeddings
from recsys.align.settings import AlignConfig
from recsys.config import Config
from recsys.errors import ArtifactError, UnknownIdError
from recsys.search.engine import Catalogue, ProductSearch, SearchFilters, top_k
from recsys.store.models import Item


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_catalogue(n: int = 40, d: int = 8, seed: int = 0) -> Catalogue:
    rng = np.random.default_rng(seed)
    return Catalogue(
        ids=tuple(f"a{i:03d}" for i in range(n)),
        titles=tuple(f"item {i}" for i in range(n)),
        categories=tuple("shoes" if i % 3 == 0 else "bags" if i % 3 == 1 else None for i in range(n)),
        available=np.array([i % 5 != 0 for i in range(n)]),
        vectors=_unit(rng.normal(size=(n, d))),
        space="test",
    )


# --- top_k ------------------------------------------------------------------------------------------

def test_top_k_matches_a_full_sort_oracle() -> None:
    rng = np.random.default_rng(1)
    scores = rng.normal(size=200).astype(np.float32)
    mask = rng.random(200) < 0.5
    rows, vals = top_k(scores, 15, mask)
    allowed = np.flatnonzero(mask)
    oracle = allowed[np.argsort(-scores[allowed], kind="stable")][:15]
    np.testing.assert_array_equal(rows, oracle)
    np.testing.assert_array_equal(vals, scores[oracle])
    rows, _ = top_k(scores, 500, mask)  # k larger than what is allowed
    assert len(rows) == mask.sum()
    with pytest.raises(ValueError, match="k must be"):
        top_k(scores, 0)


def test_top_k_breaks_ties_by_row() -> None:
    rows, _ = top_k(np.array([0.5, 0.9, 0.9, 0.1, 0.9], np.float32), 3)
    np.testing.assert_array_equal(rows, [1, 2, 4])


# --- filters ----------------------------------------------------------------------------------------

def test_filters_by_category_availability_and_exclusion() -> None:
    cat = make_catalogue()
    search = ProductSearch(cat, encode_text=lambda b: cat.vectors[[7]])
    hits = search.search(text="anything", k=100, filters=SearchFilters(categories=("shoes",)))
    rows = [cat.row(h.item_id) for h in hits]
    assert rows and all(r % 3 == 0 and r % 5 != 0 for r in rows)  # available shoes only
    assert len(hits) == sum(1 for i in range(40) if i % 3 == 0 and i % 5 != 0)
    everything = search.search(text="x", k=100, filters=SearchFilters(available_only=False))
    assert len(everything) == 40
    default = search.search(text="x", k=100)
    assert len(default) == 32  # the default filters drop unavailable items
    no_self = search.search(text="x", k=5, filters=SearchFilters(exclude=("a007",)))
    assert "a007" not in [h.item_id for h in no_self]
    assert search.search(text="x", k=1)[0].item_id == "a007"  # its own vector ranks first
    two = search.search(text="x", k=100, filters=SearchFilters(categories=("shoes", "bags"), available_only=False))
    assert {h.category for h in two} == {"shoes", "bags"}


def test_hits_are_sorted_and_scored_by_cosine() -> None:
    cat = make_catalogue()
    q = _unit(np.ones((1, 8)))
    hits = ProductSearch(cat, encode_text=lambda b: q).search(text="q", k=10, filters=SearchFilters(available_only=False))
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    np.testing.assert_allclose(scores, np.sort(cat.vectors @ q[0])[::-1][:10], atol=1e-6)


def test_catalogue_validation_and_ids() -> None:
    cat = make_catalogue(5)
    assert cat.row("a003") == 3
    with pytest.raises(UnknownIdError, match="a999"):
        cat.row("a999")
    with pytest.raises(ValueError, match="unique"):
        Catalogue(("a", "a"), ("", ""), (None, None), np.ones(2, bool), np.eye(2, dtype=np.float32))
    with pytest.raises(ValueError, match="vectors must be"):
        Catalogue(("a",), ("",), (None,), np.ones(1, bool), np.eye(2, dtype=np.float32))


def test_items_without_a_vector_never_match() -> None:
    cat = make_catalogue(6)
    vectors = cat.vectors.copy()
    vectors[2] = 0
    cat = Catalogue(cat.ids, cat.titles, cat.categories, np.ones(6, bool), vectors)
    hits = ProductSearch(cat, encode_text=lambda b: -_unit(np.ones((1, 8)))).search(text="x", k=10)
    assert "a002" not in [h.item_id for h in hits] and len(hits) == 5


# --- text, image, both ------------------------------------------------------------------------------

def test_text_image_and_combined_queries() -> None:
    cat = make_catalogue(d=4)
    t = _unit(np.array([[1.0, 0, 0, 0]]))
    i = _unit(np.array([[0, 1.0, 0, 0]]))
    seen: list[Sequence[object]] = []

    def enc_image(batch: Sequence[object]) -> np.ndarray:
        seen.append(batch)
        return i

    search = ProductSearch(cat, encode_text=lambda b: t, encode_image=enc_image, text_weight=0.75, image_weight=0.25)
    np.testing.assert_allclose(search.query_vector(text="x"), t[0])
    np.testing.assert_allclose(search.query_vector(image="img"), i[0])
    both = search.query_vector(text="x", image="img")
    np.testing.assert_allclose(both, np.array([0.75, 0.25, 0, 0]) / np.hypot(0.75, 0.25), atol=1e-6)
    assert seen[0] == ["img"]
    f = SearchFilters(available_only=False)
    assert search.search(text="x", image="img", k=3, filters=f)[0].item_id == search.search_vector(both, 3, f)[0].item_id


def test_query_errors_are_clear() -> None:
    cat = make_catalogue()
    search = ProductSearch(cat, encode_text=lambda b: cat.vectors[:1])
    with pytest.raises(ValueError, match="text, an image, or both"):
        search.search()
    with pytest.raises(ValueError, match="empty"):
        search.search(text="  ")
    with pytest.raises(ValueError, match="train-align"):
        search.search(image="img")
    bad = ProductSearch(cat, encode_text=lambda b: np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match="expects"):
        bad.search(text="x")
    with pytest.raises(ValueError, match="not both 0"):
        ProductSearch(cat, text_weight=0, image_weight=0)


# --- wiring from SQL --------------------------------------------------------------------------------

class FakeEncoder:
    """A deterministic 'encoder': a fixed random map of a hash of the input."""

    def __init__(self, name: str, dim: int) -> None:
        self.name, self.dim, self.version = name, dim, f"{name}@0000"

    def encode(self, batch: Sequence[object]) -> np.ndarray:
        out = []
        for x in batch:
            key = x.tobytes() if isinstance(x, Image.Image) else str(x).encode()
            seed = int.from_bytes(hashlib.sha256(key).digest()[:4], "little")
            out.append(np.random.default_rng(seed).normal(size=self.dim))
        return _unit(np.array(out))


def _populate(engine: Engine, n: int, text_enc: FakeEncoder, image_enc: FakeEncoder, no_image: set[int]) -> list[Image.Image]:
    from recsys.embed.store import VectorRow, write_vectors

    with engine.begin() as conn:
        conn.execute(insert(Item), [
            {"external_id": f"x{i}", "title": f"title {i}", "description": "", "category": "odd" if i % 2 else "even",
             "image": None if i in no_image else f"/img/{i}.jpg", "available": True, "content_hash": f"h{i}",
             "attributes": {}}
            for i in range(n)
        ])
    images = [Image.new("RGB", (4, 4), (i, 2 * i, 3 * i)) for i in range(n)]
    tv = text_enc.encode([f"title {i}" for i in range(n)])
    iv = image_enc.encode(images)
    write_vectors(engine, "text", text_enc.version, text_enc.dim, [VectorRow(i + 1, f"h{i}", tv[i]) for i in range(n)])
    write_vectors(engine, "image", image_enc.version, image_enc.dim,
                  [VectorRow(i + 1, f"h{i}", iv[i]) for i in range(n) if i not in no_image])
    return images


def test_search_built_from_the_database_uses_the_active_alignment(sqlite_engine: Engine, tmp_path: Path) -> None:
    from recsys.align.store import load_alignment, paired_vectors, train_from_store
    from recsys.search.loader import build_product_search

    te, ie = FakeEncoder("t", 12), FakeEncoder("i", 20)
    images = _populate(sqlite_engine, 60, te, ie, no_image={3, 4})
    config = Config(data_dir=tmp_path / "data")
    align = AlignConfig(dim=8, hidden_dim=16, epochs=3, batch_size=32, ensemble=1, min_items=8, threads=1,
                        fusion_text_weight=0.6, fusion_image_weight=0.4)

    ids, text, image = paired_vectors(sqlite_engine, te.version, ie.version)
    assert len(ids) == 58 and text.shape == (58, 12) and image.shape == (58, 20)

    # No alignment yet: raw text search; image queries are refused with a clear message.
    raw = build_product_search(sqlite_engine, config, align, text_encoder=te, image_encoder=ie)
    assert raw.catalogue.space == te.version and raw.search(text="title 5", k=1)[0].item_id == "x5"
    with pytest.raises(ValueError, match="train-align"):
        raw.search(image=images[5])

    model, path = train_from_store(sqlite_engine, config, align, versions=(te.version, ie.version))
    assert path == (config.artifacts_path / "align" / model.version).resolve() and (path / "manifest.json").is_file()
    loaded = load_alignment(sqlite_engine, config)
    assert loaded is not None and loaded.version == model.version

    search = build_product_search(sqlite_engine, config, align, text_encoder=te, image_encoder=lambda: ie)
    cat = search.catalogue
    assert len(cat) == 60 and cat.space == f"align:{model.version}"
    # The catalogue holds the fused embedding; items 3 and 4 (no image) fall back to their text.
    row5, row3 = cat.row("x5"), cat.row("x3")
    expected5 = fuse_embeddings(model.project_text(te.encode(["title 5"])), model.project_image(ie.encode([images[5]])),
                                text_weight=0.6, image_weight=0.4)
    np.testing.assert_allclose(cat.vectors[row5], expected5[0], atol=1e-5)
    np.testing.assert_allclose(cat.vectors[row3], model.project_text(te.encode(["title 3"]))[0], atol=1e-5)
    hits = search.search(image=images[7], k=60, filters=SearchFilters(categories=("odd",)))
    assert {h.category for h in hits} == {"odd"} and len(hits) == 30
    np.testing.assert_allclose(search.query_vector(image=images[7]), model.project_image(ie.encode([images[7]]))[0],
                               atol=1e-6)

    # An item marked unavailable disappears from default results.
    with sqlite_engine.begin() as conn:
        conn.execute(update(Item).where(Item.external_id == "x9").values(available=False))
    again = build_product_search(sqlite_engine, config, align, text_encoder=te, image_encoder=ie)
    assert "x9" not in [h.item_id for h in again.search(text="title 9", k=60)]

    # A text encoder other than the alignment's is refused.
    with pytest.raises(ArtifactError, match="trained on text vectors"):
        build_product_search(sqlite_engine, config, align, text_encoder=FakeEncoder("other", 12), image_encoder=ie)


def test_training_from_the_store_with_short_text_views(sqlite_engine: Engine, tmp_path: Path) -> None:
    from recsys.align.store import title_views, train_from_store

    te, ie = FakeEncoder("t", 12), FakeEncoder("i", 20)
    _populate(sqlite_engine, 40, te, ie, no_image=set())
    views = title_views(sqlite_engine, np.array([1, 2]), te)
    np.testing.assert_allclose(views, te.encode(["title 0. even", "title 1. odd"]))
    align = AlignConfig(dim=8, hidden_dim=16, epochs=2, batch_size=16, ensemble=1, min_items=8, threads=1,
                        text_view_prob=0.5)
    config = Config(data_dir=tmp_path)
    model, _ = train_from_store(sqlite_engine, config, align, versions=(te.version, ie.version), text_encoder=te)
    plain, _ = train_from_store(sqlite_engine, config, align.model_copy(update={"text_view_prob": 0.0}),
                                versions=(te.version, ie.version))
    assert model.version != plain.version
    with pytest.raises(ArtifactError, match="short text views"):
        train_from_store(sqlite_engine, config, align, versions=(te.version, ie.version),
                         text_encoder=FakeEncoder("other", 12))


def test_training_from_an_empty_store_says_to_embed(sqlite_engine: Engine, tmp_path: Path) -> None:
    from recsys.align.store import train_from_store

    with pytest.raises(ArtifactError, match="recsys embed"):
        train_from_store(sqlite_engine, Config(data_dir=tmp_path), AlignConfig(), versions=("t@0", "i@0"))


def test_search_cli_needs_a_query(tmp_path: Path) -> None:
    from recsys.cli import cli

    res = CliRunner().invoke(cli, ["search"], env=_cli_env(tmp_path))
    assert res.exit_code == 2 and "TEXT query" in res.output


def _cli_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "none.yaml").write_text("{}\n")
    return {"RECSYS_DATA_DIR": str(tmp_path / "data"), "RECSYS_CONFIG": str(tmp_path / "none.yaml")}


def test_train_align_and_search_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import recsys.align.store
    import recsys.encoders.factory
    from recsys.cli import cli
    from recsys.store.db import make_engine, upgrade

    env = _cli_env(tmp_path)
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'recsys.sqlite'}")
    upgrade(engine)
    te, ie = FakeEncoder("t", 12), FakeEncoder("i", 20)
    _populate(engine, 50, te, ie, no_image={0})
    engine.dispose()
    monkeypatch.setattr(recsys.align.store, "configured_versions", lambda config: (te.version, ie.version))
    monkeypatch.setattr(recsys.encoders.factory, "build_text_encoder", lambda cfg, device="cpu", **kw: te)
    runner = CliRunner()

    # Before any alignment: raw text search.
    res = runner.invoke(cli, ["search", "title 4", "--k", "3"], env=env)
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0].split()[:2] == ["1", "x4"]

    res = runner.invoke(cli, ["train-align", "--set", "epochs=2", "--set", "ensemble=1", "--set", "dim=8",
                              "--set", "hidden_dim=16", "--set", "min_items=8", "--json"], env=env)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["metrics"]["n_train"] + out["metrics"]["n_val"] == 49
    assert Path(out["path"], "manifest.json").is_file()

    res = runner.invoke(cli, ["search", "title 4", "--k", "5", "--category", "even", "--json"], env=env)
    assert res.exit_code == 0, res.output
    hits = json.loads(res.output)
    assert hits["space"] == f"align:{out['version']}"
    assert len(hits["hits"]) == 5 and {h["category"] for h in hits["hits"]} == {"even"}

    res = runner.invoke(cli, ["train-align", "--set", "epochs=zero"], env=env)
    assert res.exit_code != 0 and "epochs" in str(res.exception)
    res = runner.invoke(cli, ["train-align", "--set", "colour=red"], env=env)
    assert res.exit_code != 0 and "unknown align key" in str(res.exception)
