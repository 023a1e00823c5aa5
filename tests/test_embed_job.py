"""The embedding job on a real SQLite database with tiny encoders: incremental, resumable, robust."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import Engine, func, insert, select, update

from recsys.embed import IMAGE, TEXT, encoder_versions, item_text, load_item_vectors, run_embed, stored_errors
from recsys.encoders import errors as E
from recsys.encoders.images import load_image
from recsys.encoders.settings import EncodersConfig, ImageEncoderConfig, TextEncoderConfig
from recsys.encoders.testing import (
    save_tiny_clip_model,
    save_tiny_text_model,
    synthetic_images,
    tiny_image_encoder,
    tiny_text_encoder,
)
from recsys.store.db import make_engine, upgrade
from recsys.store.models import Item, ItemEmbedding

MAX_PIXELS = 3000  # the "too large" image below has 4,800
N_GOOD = 7
DB = tuple[Engine, dict[str, int], dict[str, str]]  # engine, external id -> item id, label -> image source
BAD_REASONS = (E.MISSING, E.NOT_AN_IMAGE, E.TOO_LARGE, E.TRUNCATED, E.FETCH_FAILED)


class Interrupted(RuntimeError):
    pass


class Counting:
    """Delegates to an encoder, counting calls and items; optionally fails after ``fail_after`` calls."""

    def __init__(self, inner: Any, fail_after: int | None = None) -> None:
        self.inner = inner
        self.name, self.version, self.dim = inner.name, inner.version, inner.dim
        self.preprocess = getattr(inner, "preprocess", None)
        self.calls = 0
        self.items = 0
        self.fail_after = fail_after

    def _count(self, n: int) -> None:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise Interrupted(f"injected failure after {self.calls} batches")
        self.calls += 1
        self.items += n

    def encode(self, batch: Sequence[Any]) -> np.ndarray:
        self._count(len(batch))
        return self.inner.encode(batch)

    def encode_tensors(self, batch: Any) -> np.ndarray:
        self._count(len(batch))
        return self.inner.encode_tensors(batch)


@pytest.fixture(scope="module")
def text_encoder(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return tiny_text_encoder(save_tiny_text_model(tmp_path_factory.mktemp("tiny-bert")), batch_size=8)


@pytest.fixture(scope="module")
def image_encoder() -> Any:
    return tiny_image_encoder(batch_size=8)


@pytest.fixture
def cfg() -> EncodersConfig:
    return EncodersConfig(
        text=TextEncoderConfig(batch_size=3),
        image=ImageEncoderConfig(batch_size=2, workers=0, max_pixels=MAX_PIXELS, fetch_timeout_s=2),
    )


def _write_images(folder: Path) -> dict[str, str]:
    """Good images plus one of each bad kind; returns label -> source."""
    folder.mkdir()
    sources: dict[str, str] = {}
    for i, img in enumerate(synthetic_images(N_GOOD, seed=3)):
        p = folder / f"good{i}.jpg"
        img.resize((40 + i, 30)).save(p, "JPEG")  # <= 1,380 pixels
        sources[f"good{i}"] = str(p)
    sources[E.MISSING] = str(folder / "gone.jpg")
    (folder / "notes.jpg").write_text("not an image")
    sources[E.NOT_AN_IMAGE] = str(folder / "notes.jpg")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(folder / "big.png")
    sources[E.TOO_LARGE] = str(folder / "big.png")  # 4,800 pixels > MAX_PIXELS
    full = (folder / "good0.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(full[: len(full) // 2])
    sources[E.TRUNCATED] = str(folder / "cut.jpg")
    sources[E.FETCH_FAILED] = "http://nonexistent.invalid/gone.jpg"  # RFC 6761: never resolves
    return sources


@pytest.fixture
def db(tmp_path: Path) -> DB:
    """A migrated SQLite file with one item per image source plus one item without an image."""
    engine = make_engine(f"sqlite:///{tmp_path}/db.sqlite")
    upgrade(engine)
    sources = _write_images(tmp_path / "img")
    rows = [
        {
            "external_id": label,
            "title": f"Item {label}",
            "description": f"a product called {label}",
            "image": src,
            "content_hash": f"h-{label}",
        }
        for label, src in sources.items()
    ]
    rows.append(
        {"external_id": "no-image", "title": "Gift card", "description": "", "image": None, "content_hash": "h0"}
    )
    with engine.begin() as conn:
        conn.execute(insert(Item), rows)
        ids = {ext: int(i) for i, ext in conn.execute(select(Item.id, Item.external_id))}
    return engine, ids, sources


def _run(engine: Engine, cfg: EncodersConfig, text: Any, image: Any) -> Any:
    return run_embed(engine, cfg, text_encoder=text, image_encoder=image, progress=False)


def test_first_run_embeds_all_and_records_every_bad_image(
    db: DB, cfg: EncodersConfig, text_encoder: Any, image_encoder: Any
) -> None:
    engine, ids, sources = db
    report = _run(engine, cfg, text_encoder, image_encoder)
    n_items = len(sources) + 1

    text, image = report.space(TEXT), report.space(IMAGE)
    assert (text.total, text.embedded, text.failed, text.skipped) == (n_items, n_items, 0, 0)
    assert (image.total, image.embedded, image.failed, image.skipped) == (len(sources), N_GOOD, 5, 0)
    assert report.failures_by_reason == {r: 1 for r in BAD_REASONS}
    for f in report.failures:
        assert ids[f.reason] == f.item_id and f.source == sources[f.reason]
    printed = "\n".join(report.lines())
    assert "5 images could not be used" in printed and "fetch_failed: 1" in printed

    # Stored vectors equal what the encoders give directly (oracle), in item-id order.
    item_ids, vecs = load_item_vectors(engine, TEXT, text_encoder.version)
    with engine.connect() as conn:
        texts = dict(conn.execute(select(Item.id, Item.title)).all())
        descs = dict(conn.execute(select(Item.id, Item.description)).all())
    assert item_ids.tolist() == sorted(ids.values()) and vecs.dtype == np.float32
    expected = text_encoder.encode([item_text(texts[i], descs[i]) for i in item_ids])
    np.testing.assert_allclose(vecs, expected, atol=1e-5)

    item_ids, vecs = load_item_vectors(engine, IMAGE, image_encoder.version)
    good = [ids[f"good{i}"] for i in range(N_GOOD)]
    assert item_ids.tolist() == sorted(good) and vecs.shape == (N_GOOD, image_encoder.dim)
    expected = image_encoder.encode([load_image(sources[f"good{i}"], MAX_PIXELS) for i in range(N_GOOD)])
    np.testing.assert_allclose(vecs, expected[np.argsort(good)], atol=1e-5)

    assert encoder_versions(engine, IMAGE) == [(image_encoder.version, N_GOOD)]
    errors = dict(stored_errors(engine, IMAGE, image_encoder.version))
    assert {i: e.split(":")[0] for i, e in errors.items()} == {ids[r]: r for r in report.failures_by_reason}
    with engine.connect() as conn:  # the item without an image has no image row at all
        no_image = (ItemEmbedding.item_id == ids["no-image"]) & (ItemEmbedding.space == IMAGE)
        assert conn.execute(select(func.count()).where(no_image)).scalar_one() == 0


def test_rerun_without_change_does_no_encoder_work(
    db: DB, cfg: EncodersConfig, text_encoder: Any, image_encoder: Any
) -> None:
    engine, _, sources = db
    _run(engine, cfg, text_encoder, image_encoder)
    text, image = Counting(text_encoder), Counting(image_encoder)
    report = _run(engine, cfg, text, image)
    assert (text.calls, image.calls) == (0, 0)
    assert report.space(TEXT).skipped == len(sources) + 1 and report.space(IMAGE).skipped == len(sources)
    assert report.space(IMAGE).failed == 0 and report.failures == []  # failures are not retried either


def test_changed_title_reembeds_that_item_only(
    db: DB, cfg: EncodersConfig, text_encoder: Any, image_encoder: Any
) -> None:
    engine, ids, _ = db
    _run(engine, cfg, text_encoder, image_encoder)
    before_ids, before = load_item_vectors(engine, TEXT, text_encoder.version)
    target = ids["good3"]
    with engine.begin() as conn:
        conn.execute(update(Item).where(Item.id == target).values(title="Wool scarf", content_hash="h-changed"))

    # Until the job runs again, the stale vector is not served.
    assert target not in load_item_vectors(engine, TEXT, text_encoder.version)[0]
    assert target in load_item_vectors(engine, TEXT, text_encoder.version, current_only=False)[0]

    text, image = Counting(text_encoder), Counting(image_encoder)
    report = _run(engine, cfg, text, image)
    assert (text.items, image.items) == (1, 1)
    assert report.space(TEXT).embedded == 1 and report.space(TEXT).skipped == len(ids) - 1
    after_ids, after = load_item_vectors(engine, TEXT, text_encoder.version)
    assert after_ids.tolist() == before_ids.tolist()
    changed = after_ids == target
    np.testing.assert_array_equal(after[~changed], before[~changed])
    expected = text_encoder.encode(["Wool scarf\na product called good3"])[0]
    np.testing.assert_allclose(after[changed][0], expected, atol=1e-5)
    assert not np.allclose(after[changed], before[changed])


@pytest.mark.parametrize("space", [TEXT, IMAGE])
def test_interrupted_run_resumes_where_it_stopped(
    db: DB, cfg: EncodersConfig, text_encoder: Any, image_encoder: Any, space: str
) -> None:
    engine, ids, sources = db
    failing = Counting(text_encoder if space == TEXT else image_encoder, fail_after=2)
    with pytest.raises(Interrupted):
        if space == TEXT:
            _run(engine, cfg, failing, None)
        else:
            _run(engine, cfg, None, failing)
    done = failing.items  # two committed batches
    version = failing.version
    assert len(load_item_vectors(engine, space, version)[0]) == done

    resumed = Counting(text_encoder if space == TEXT else image_encoder)
    report = _run(engine, cfg, resumed if space == TEXT else None, resumed if space == IMAGE else None)
    expected_total = N_GOOD if space == IMAGE else len(ids)
    assert resumed.items == expected_total - done
    assert len(load_item_vectors(engine, space, version)[0]) == expected_total
    # nothing lost, nothing done twice: every item has exactly one row
    with engine.connect() as conn:
        counts = conn.execute(
            select(ItemEmbedding.item_id, func.count())
            .where(ItemEmbedding.space == space)
            .group_by(ItemEmbedding.item_id)
        ).all()
    assert all(n == 1 for _, n in counts)
    assert len(counts) == (len(sources) if space == IMAGE else len(ids))
    if space == IMAGE:  # the batches of the first run held some failures; the rest are reported now
        assert report.space(IMAGE).embedded + report.space(IMAGE).failed + report.space(IMAGE).skipped == len(sources)


def test_worker_processes_give_the_same_vectors(db: DB, cfg: EncodersConfig, image_encoder: Any) -> None:
    engine, _, _ = db
    in_process = _run(engine, cfg, None, image_encoder)
    ids0, vecs0 = load_item_vectors(engine, IMAGE, image_encoder.version)
    with engine.begin() as conn:
        conn.execute(ItemEmbedding.__table__.delete())
    two_workers = cfg.model_copy(update={"image": cfg.image.model_copy(update={"workers": 2})})
    report = _run(engine, two_workers, None, image_encoder)
    ids1, vecs1 = load_item_vectors(engine, IMAGE, image_encoder.version)
    assert ids1.tolist() == ids0.tolist()
    np.testing.assert_array_equal(vecs1, vecs0)
    assert report.failures_by_reason == in_process.failures_by_reason


def test_a_new_encoder_version_is_stored_beside_the_old(db: DB, cfg: EncodersConfig, image_encoder: Any) -> None:
    engine, _, _ = db
    _run(engine, cfg, None, image_encoder)
    other = tiny_image_encoder(seed=1)
    assert other.version != image_encoder.version
    report = _run(engine, cfg, None, other)
    assert report.space(IMAGE).embedded == N_GOOD
    a, b = load_item_vectors(engine, IMAGE, image_encoder.version), load_item_vectors(engine, IMAGE, other.version)
    assert a[0].tolist() == b[0].tolist() and not np.allclose(a[1], b[1])
    assert load_item_vectors(engine, IMAGE, "nope@0")[1].shape == (0, 0)


def test_cli_embed(db: DB, tmp_path: Path) -> None:
    from recsys.cli import cli

    engine, ids, sources = db
    clip = f"clip:{save_tiny_clip_model(tmp_path / 'clip')}"
    config = {
        "database": {"url": str(engine.url)},
        "encoders": {
            "text": {"name": clip},
            "image": {"name": clip, "workers": 0, "max_pixels": MAX_PIXELS, "fetch_timeout_s": 2},
        },
        "images": {"roots": [str(tmp_path / "img")]},  # the rows were inserted directly, not ingested
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    runner = CliRunner()
    result = runner.invoke(cli, ["--config", str(tmp_path / "config.yaml"), "embed", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert f"{len(ids)} embedded, 0 failed" in result.output
    assert f"{N_GOOD} embedded, 5 failed" in result.output
    assert "5 images could not be used" in result.output and "too_large: 1" in result.output
    again = runner.invoke(cli, ["--config", str(tmp_path / "config.yaml"), "embed", "--space", "image"])
    assert again.exit_code == 0, again.output
    assert f"0 embedded, 0 failed, {len(sources)} up to date" in again.output


def test_progress_bar_shows_items_per_second(
    db: DB, cfg: EncodersConfig, text_encoder: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    engine, ids, _ = db
    run_embed(engine, cfg, text_encoder=text_encoder, image_encoder=None, progress=True)
    err = capsys.readouterr().err
    assert "embed text" in err and "item/s" in err and f"{len(ids)}/{len(ids)}" in err


@pytest.mark.postgres
def test_job_on_postgresql(
    postgres_url: str, tmp_path: Path, cfg: EncodersConfig, text_encoder: Any, image_encoder: Any
) -> None:
    engine = make_engine(postgres_url)
    upgrade(engine)
    sources = _write_images(tmp_path / "img")
    with engine.begin() as conn:
        rows = [
            {"external_id": k, "title": k, "description": "", "image": v, "content_hash": k} for k, v in sources.items()
        ]
        conn.execute(insert(Item), rows)
    report = _run(engine, cfg, text_encoder, image_encoder)
    assert report.space(IMAGE).embedded == N_GOOD and len(report.failures) == 5
    ids, vecs = load_item_vectors(engine, IMAGE, image_encoder.version)
    assert vecs.shape == (N_GOOD, image_encoder.dim) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    counting = Counting(text_encoder)
    _run(engine, cfg, counting, None)
    assert counting.calls == 0
    engine.dispose()
