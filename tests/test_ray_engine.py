"""The Ray Data engine on a local Ray instance: ordered model-actor batches, and ``recsys embed --engine ray``
storing the same vectors as the local engine (SQLite, tiny random encoders)."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import Engine, insert, select

from recsys.embed import IMAGE, TEXT, load_item_vectors, run_embed, stored_errors
from recsys.embed.ray_job import run_embed_ray
from recsys.encoders import errors as E
from recsys.encoders.settings import EncodersConfig, ImageEncoderConfig, TextEncoderConfig
from recsys.encoders.testing import save_tiny_text_model, synthetic_images, tiny_image_encoder, tiny_text_encoder
from recsys.engines.ray_engine import ROW, _columns, init_ray, map_batches_ordered, ray_session
from recsys.engines.settings import RayConfig
from recsys.errors import ArtifactError, RecsysError
from recsys.store.db import make_engine, upgrade
from recsys.store.models import Item, ItemEmbedding

REPO = Path(__file__).resolve().parents[1]
MAX_PIXELS = 3000
N_GOOD = 5


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    """One local Ray instance (2 CPUs) for the module, shut down afterwards."""
    import ray

    assert not ray.is_initialized()
    environ = dict(os.environ)
    with ray_session(None, num_cpus=2):
        assert ray.is_initialized() and ray.cluster_resources()["CPU"] == 2
        yield ray
    assert not ray.is_initialized() and dict(os.environ) == environ  # stopped, environment restored


@pytest.fixture(scope="module")
def tiny_text_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_text_model(tmp_path_factory.mktemp("tiny-bert"))


def _catalogue(engine: Engine, folder: Path) -> dict[str, int]:
    """Items with good images, a missing and a non-image file, and one without an image; label -> item id."""
    folder.mkdir()
    rows = []
    for i, img in enumerate(synthetic_images(N_GOOD, seed=5)):
        img.resize((30 + 3 * i, 30)).save(folder / f"good{i}.png")
        # Titles of different lengths: the text batches are sorted by length, so order matters.
        rows.append({"external_id": f"good{i}", "title": "word " * (1 + (7 * i) % 5), "image": str(folder / f"good{i}.png")})
    (folder / "notes.jpg").write_text("not an image")
    rows.append({"external_id": E.NOT_AN_IMAGE, "title": "notes", "image": str(folder / "notes.jpg")})
    rows.append({"external_id": E.MISSING, "title": "gone", "image": str(folder / "gone.jpg")})
    rows.append({"external_id": "no-image", "title": "Gift card", "image": None})
    for r in rows:
        r.update(description=f"about {r['external_id']}", content_hash=f"h-{r['external_id']}")
    with engine.begin() as conn:
        conn.execute(insert(Item), rows)
        return {ext: int(i) for i, ext in conn.execute(select(Item.id, Item.external_id))}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[Engine, dict[str, int]]]:
    engine = make_engine(f"sqlite:///{tmp_path}/db.sqlite")
    upgrade(engine)
    ids = _catalogue(engine, tmp_path / "img")
    yield engine, ids
    engine.dispose()


def _clear(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(ItemEmbedding.__table__.delete())


# --- the generic layer ---------------------------------------------------------------------------


def make_scorer(weight: float) -> Any:
    """An export-style scorer factory: runs once per actor, returns the per-batch function."""
    model_id = np.int64(os.getpid() * 1000 + np.random.default_rng().integers(1000))

    def fn(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["x"])
        return {
            "score": batch["x"].sum(axis=1) * weight,
            "label": np.array([f"{s}!" for s in batch["name"]], dtype=object),
            "batch_len": np.full(n, n),
            "model": np.full(n, model_id),
        }

    return fn


def make_bad_scorer() -> Any:
    return lambda batch: {"score": np.zeros(1)}


def test_map_batches_ordered_keeps_order_and_batches(ray_local: Any) -> None:
    n, batch_size = 23, 4
    x = np.random.default_rng(0).random((n, 3)).astype(np.float32)
    names = np.array([f"row{i}" for i in range(n)], dtype=object)
    outs = list(
        map_batches_ordered({"x": x, "name": names}, functools.partial(make_scorer, 2.0), batch_size=batch_size, actors=2)
    )
    assert [len(o["score"]) for o in outs] == [4, 4, 4, 4, 4, 3]
    score = np.concatenate([o["score"] for o in outs])
    np.testing.assert_allclose(score, x.sum(axis=1) * 2.0, rtol=1e-6)
    assert np.concatenate([o["label"] for o in outs]).tolist() == [f"row{i}!" for i in range(n)]
    assert all((o["batch_len"] == len(o["score"])).all() for o in outs)
    models = set(np.concatenate([o["model"] for o in outs]).tolist())
    assert 1 <= len(models) <= 2  # the model is built once per actor, not once per batch

    assert list(map_batches_ordered({"x": x[:0], "name": names[:0]}, make_bad_scorer, batch_size=4)) == []


def test_input_tables_are_columns_or_a_data_frame() -> None:
    import pandas as pd

    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    cols = _columns(frame)
    assert cols["a"].tolist() == [1, 2, 3] and cols["b"].tolist() == ["x", "y", "z"]
    assert _columns({"v": [[1.0, 2.0], [3.0, 4.0]]})["v"].shape == (2, 2)
    with pytest.raises(ValueError, match="differ in length"):
        _columns({"x": np.ones(3), "y": np.ones(2)})
    with pytest.raises(ValueError, match="reserved"):
        _columns({ROW: np.ones(3)})


def test_a_batch_function_must_keep_the_row_count(ray_local: Any) -> None:
    x = np.ones((6, 2))
    with pytest.raises(Exception, match="one output row per input row"):
        list(map_batches_ordered({"x": x}, make_bad_scorer, batch_size=3, actors=1))


def make_failing_model() -> Any:
    raise ArtifactError("model file gone: /nowhere/model.npz")


def make_failing_scorer() -> Any:
    def fn(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if batch["x"].max() >= 4:
            raise ArtifactError(f"cannot score row {int(batch['x'].max())}")
        return {"y": batch["x"]}

    return fn


def test_a_recsys_error_in_an_actor_is_raised_as_itself(ray_local: Any) -> None:
    x = np.arange(6)
    with pytest.raises(ArtifactError, match=r"^model file gone: /nowhere/model.npz$"):
        list(map_batches_ordered({"x": x}, make_failing_model, batch_size=2, actors=1))
    got = []
    with pytest.raises(ArtifactError, match=r"^cannot score row 5$"):
        for out in map_batches_ordered({"x": x}, make_failing_scorer, batch_size=2, actors=1):
            got.extend(out["y"].tolist())
    assert got == [0, 1, 2, 3]  # the batches before the failing one arrived


@pytest.mark.parametrize("address", ["ray://head:10001", " "])
def test_addresses_ray_data_cannot_use_are_refused_before_connecting(address: str) -> None:
    with pytest.raises(RecsysError, match="Ray Client|address is empty"):
        init_ray(address)


def test_ray_session_reuses_a_running_ray(ray_local: Any) -> None:
    with ray_session(None, num_cpus=1):
        assert ray_local.is_initialized()
    assert ray_local.is_initialized()  # not started by the block, so not shut down by it


# --- recsys embed --engine ray --------------------------------------------------------------------


def test_ray_engine_stores_the_same_vectors_as_the_local_engine(
    ray_local: Any, db: tuple[Engine, dict[str, int]], tiny_text_dir: Path
) -> None:
    engine, ids = db
    cfg = EncodersConfig(
        text=TextEncoderConfig(batch_size=3), image=ImageEncoderConfig(batch_size=2, workers=0, max_pixels=MAX_PIXELS)
    )
    text_factory = functools.partial(tiny_text_encoder, tiny_text_dir, batch_size=3)
    image_factory = functools.partial(tiny_image_encoder, batch_size=2)
    text_encoder, image_encoder = text_factory(), image_factory()

    local = run_embed(engine, cfg, text_encoder=text_encoder, image_encoder=image_encoder)
    local_text = load_item_vectors(engine, TEXT, text_encoder.version)
    local_image = load_item_vectors(engine, IMAGE, image_encoder.version)
    local_errors = stored_errors(engine, IMAGE, image_encoder.version)
    _clear(engine)

    ray_cfg = RayConfig(actors=1)  # two actors, rows back in order: test_map_batches_ordered_keeps_order_and_batches
    report = run_embed_ray(engine, cfg, ray_cfg, text_factory=text_factory, image_factory=image_factory)
    ray_text = load_item_vectors(engine, TEXT, text_encoder.version)
    ray_image = load_item_vectors(engine, IMAGE, image_encoder.version)

    assert ray_text[0].tolist() == local_text[0].tolist() == sorted(ids.values())
    assert np.allclose(ray_text[1], local_text[1], atol=1e-6)
    assert ray_image[0].tolist() == local_image[0].tolist() and len(ray_image[0]) == N_GOOD
    assert np.allclose(ray_image[1], local_image[1], atol=1e-6)
    assert stored_errors(engine, IMAGE, image_encoder.version) == local_errors
    assert {i: e.split(":")[0] for i, e in local_errors} == {ids[E.NOT_AN_IMAGE]: E.NOT_AN_IMAGE, ids[E.MISSING]: E.MISSING}
    assert [line.split(";")[0] for line in report.lines()] == [line.split(";")[0] for line in local.lines()]
    assert sorted((f.item_id, f.reason, f.source) for f in report.failures) == sorted(
        (f.item_id, f.reason, f.source) for f in local.failures
    )

    # Incremental like the local engine: nothing changed, nothing to do (no Ray Data job at all).
    again = run_embed_ray(engine, cfg, ray_cfg, text_factory=text_factory, image_factory=image_factory)
    assert [(s.embedded, s.failed, s.skipped) for s in again.spaces] == [(0, 0, len(ids)), (0, 0, N_GOOD + 2)]


def _write_config(tmp_path: Path, engine: Engine, text_model: Path) -> Path:
    config = {"database": {"url": str(engine.url)}, "encoders": {"text": {"name": str(text_model), "batch_size": 4}}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_cli_engine_ray_matches_cli_engine_local(
    ray_local: Any, db: tuple[Engine, dict[str, int]], tiny_text_dir: Path, tmp_path: Path
) -> None:
    from recsys.cli import cli

    engine, ids = db
    config = _write_config(tmp_path, engine, tiny_text_dir)
    runner = CliRunner()
    base = ["--config", str(config), "embed", "--space", "text", "--no-progress"]
    local = runner.invoke(cli, base)
    assert local.exit_code == 0, local.output
    version = tiny_text_encoder(tiny_text_dir).version
    local_vectors = load_item_vectors(engine, TEXT, version)
    _clear(engine)

    result = runner.invoke(cli, [*base, "--engine", "ray", "--ray-actors", "1"])
    assert result.exit_code == 0, result.output
    assert f"{len(ids)} embedded, 0 failed, 0 up to date" in result.output
    ray_vectors = load_item_vectors(engine, TEXT, version)
    assert ray_vectors[0].tolist() == local_vectors[0].tolist()
    assert np.allclose(ray_vectors[1], local_vectors[1], atol=1e-6)
    assert ray_local.is_initialized()  # the command joined the running instance and left it running

    misuse = runner.invoke(cli, [*base, "--ray-address", "auto"])
    assert misuse.exit_code == 2 and "need --engine ray" in misuse.output


def test_cli_engine_ray_reports_an_encoder_error_from_the_workers(
    ray_local: Any, db: tuple[Engine, dict[str, int]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from recsys.cli import main

    engine, _ = db
    config = _write_config(tmp_path, engine, tmp_path / "no-such-model")
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(config), "embed", "--space", "text", "--engine", "ray"])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # one line, not a worker traceback
    assert last.startswith("error: cannot load text encoder") and "no-such-model" in last


def test_engine_ray_without_ray_installed_says_how_to_install(
    db: tuple[Engine, dict[str, int]], tiny_text_dir: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    from recsys.cli import main

    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(RecsysError, match=r"pip install 'recsys\[ray\]'"):
        init_ray()
    engine, _ = db
    config = _write_config(tmp_path, engine, tiny_text_dir)
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(config), "embed", "--space", "text", "--engine", "ray"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "needs Ray Data, which is not installed" in err and "pip install 'recsys[ray]'" in err
    with engine.connect() as conn:
        assert conn.execute(select(ItemEmbedding.id)).first() is None  # nothing ran


def test_the_local_engine_never_imports_ray(db: tuple[Engine, dict[str, int]], tiny_text_dir: Path, tmp_path: Path) -> None:
    engine, ids = db
    config = _write_config(tmp_path, engine, tiny_text_dir)
    code = (
        "import sys\n"
        "from recsys.cli import main\n"
        f"main(['--config', {str(config)!r}, 'embed', '--space', 'text', '--no-progress'])\n"
        "import recsys.engines, recsys.embed.ray_job, recsys.engines.ray_engine\n"
        "print('RAY_LOADED' if any(m == 'ray' or m.startswith('ray.') for m in sys.modules) else 'NO_RAY')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"{len(ids)} embedded" in out.stdout and "NO_RAY" in out.stdout


def test_the_image_policy_reaches_the_ray_actors(ray_local: Any, db: tuple[Engine, dict[str, int]], tmp_path: Path) -> None:
    """The access policy travels to the model actors: images outside its roots are refused there, unread."""
    from recsys.encoders.access import ImagePolicy

    engine, ids = db
    cfg = EncodersConfig(image=ImageEncoderConfig(batch_size=2, workers=0, max_pixels=MAX_PIXELS))
    elsewhere = tmp_path / "other-root"
    elsewhere.mkdir()
    report = run_embed_ray(engine, cfg, RayConfig(actors=1), text_factory=None,
                           image_factory=functools.partial(tiny_image_encoder, batch_size=2),
                           policy=ImagePolicy(roots=(str(elsewhere.resolve()),)))
    assert report.space(IMAGE).embedded == 0 and {f.reason for f in report.failures} == {E.REFUSED}
    assert len(report.failures) == N_GOOD + 2
