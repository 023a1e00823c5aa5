"""``recsys export --engine ray`` writes the same rows as ``--engine local`` (MovieLens, tiny text encoder).

Set-up as tests/test_feed_consistency.py: ingest with the CLI, embed with a tiny text encoder saved to a
folder (so that the Ray actors load it by name from the config), ``recsys train`` with small grids. One
local Ray instance (2 CPUs) serves the module; the CLI joins it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from recsys.cli import cli
from recsys.config import Config, load_config
from recsys.errors import ArtifactError, ConfigError

pytestmark = pytest.mark.shared_data

FOLDER, PRESET = "movielens-100k-posters", "movielens"
COLUMNS = {"recommendations": ("user_id", "item_id"), "similar": ("item_id", "similar_item_id")}
"""Per export: the id column the rows are sorted by, and the ranked id column."""


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    """One local Ray instance (2 CPUs) for the module, shut down afterwards."""
    pytest.importorskip("ray.data")
    import ray

    from recsys.engines.ray_engine import ray_session

    assert not ray.is_initialized()
    with ray_session(None, num_cpus=2):
        yield ray
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def trained(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Config]:
    """MovieLens ingested, embedded with a tiny text encoder and trained; returns (config file, config)."""
    from recsys.embed import run_embed
    from recsys.encoders.testing import save_tiny_text_model, tiny_text_encoder
    from recsys.store.db import make_engine

    tmp = tmp_path_factory.mktemp("export-ray")
    tiny = save_tiny_text_model(tmp / "tiny-text")
    cfg_file = tmp / "config.yaml"
    cfg_file.write_text(
        f"data_dir: {tmp / 'data'}\nencoders:\n  text:\n    name: {tiny}\n    batch_size: 64\n    max_length: 32\n"
        # small grids keep the test quick; the ranking and the export are the real code
        "cf:\n  iterations: 5\n  hybrid:\n    rounds: 1\n    profile_gamma: [0.0, 10.0]\n"
        "    profile_tau: [3.0, 1000.0]\n    cold_offset: [0.0]\n    cold_scale: [1.0]\n"
        "ray:\n  actors: 2\n  cpus_per_actor: 1\n"
    )
    (tmp / "data").mkdir()
    runner = CliRunner()
    base = ["--config", str(cfg_file)]
    assert runner.invoke(cli, [*base, "db", "upgrade"]).exit_code == 0
    for kind in ("items", "events"):
        res = runner.invoke(cli, [*base, "ingest", kind, str(shared_data / FOLDER / f"{kind}.csv"), "--preset", PRESET])
        assert res.exit_code == 0, res.output
    config = load_config(cfg_file, env={})
    engine = make_engine(config.database_url)
    run_embed(engine, config.encoders, text_encoder=tiny_text_encoder(tiny), image_encoder=None)
    engine.dispose()
    res = runner.invoke(cli, [*base, "train"])
    assert res.exit_code == 0, res.output
    return cfg_file, config


def _export(cfg_file: Path, what: str, out: Path, engine: str, chunk_size: int) -> dict[str, Any]:
    res = CliRunner().invoke(cli, ["--config", str(cfg_file), "export", what, "--out", str(out), "-k", "20",
                                   "--engine", engine, "--chunk-size", str(chunk_size), "--no-progress"])
    assert res.exit_code == 0, res.output
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    assert manifest["engine"] == engine
    return manifest


def _sorted(path: Path, key: str) -> pa.Table:
    return pq.read_table(path).sort_by([(key, "ascending"), ("rank", "ascending")])


@pytest.mark.parametrize(("what", "chunk_size"), [("recommendations", 200), ("similar", 400)])
def test_ray_export_writes_the_same_rows_as_the_local_export(
    ray_local: Any, trained: tuple[Path, Config], tmp_path: Path, what: str, chunk_size: int
) -> None:
    cfg_file, _ = trained
    key, other = COLUMNS[what]
    local_manifest = _export(cfg_file, what, tmp_path / "local.parquet", "local", chunk_size)
    ray_manifest = _export(cfg_file, what, tmp_path / "ray.parquet", "ray", chunk_size)
    assert ray_manifest["chunks"] == local_manifest["chunks"] > 2  # several chunks, over both actors
    assert ray_manifest["versions"] == local_manifest["versions"]

    local, ray_rows = _sorted(tmp_path / "local.parquet", key), _sorted(tmp_path / "ray.parquet", key)
    assert ray_rows.schema == local.schema
    assert ray_rows.num_rows == local.num_rows == 20 * ray_manifest["ids"]
    for column in (key, "rank", other):
        assert ray_rows.column(column).to_pylist() == local.column(column).to_pylist(), column
    assert np.allclose(ray_rows.column("score").to_numpy(), local.column("score").to_numpy(), rtol=1e-5, atol=1e-6)
    assert ray_local.is_initialized()  # the command joined the module's Ray and left it running


class _Interrupted(Exception):
    pass


def test_an_interrupted_ray_export_resumes_with_the_missing_chunks(
    ray_local: Any, trained: tuple[Path, Config], tmp_path: Path
) -> None:
    """Chunks 0-1 written, then a failure; the next run ranks chunks 2.. only, and the file is the local one."""
    from recsys.export.job import ExportContext, ExportOptions, run_export
    from recsys.export.ray_export import ray_chunk_runner
    from recsys.export.writers import open_sink
    from recsys.serving import Runtime

    _, config = trained
    rt = Runtime.from_config(config)
    ctx = ExportContext.from_runtime(rt)
    opts = ExportOptions(k=20, chunk_size=200)
    out = tmp_path / "recs.parquet"

    def export(runner: Any, path: Path = out) -> Any:
        def sink(spec: Any, schema: Any) -> Any:
            return open_sink(str(path), "parquet", None, rt.engine, spec, schema)

        return run_export(ctx, opts, sink, engine=rt.engine, event_types=dict(config.event_types), rank_chunks=runner,
                          register=False)

    runner = ray_chunk_runner(config)
    asked: list[list[int]] = []

    def failing(todo: Any, *args: Any) -> Any:
        asked.append(list(todo))
        for n, pair in enumerate(runner(todo, *args)):
            if n == 2:
                raise _Interrupted
            yield pair

    with pytest.raises(_Interrupted):
        export(failing)
    assert not out.exists()

    def recording(todo: Any, *args: Any) -> Any:
        asked.append(list(todo))
        yield from runner(todo, *args)

    result = export(recording)
    assert asked == [[0, 1, 2, 3, 4], [2, 3, 4]] and result.resumed_chunks == 2
    local = export(None, tmp_path / "local.parquet")
    assert local.rows == result.rows + 2 * 200 * 20  # this run wrote 3 of the 5 chunks
    assert pq.read_table(out).drop_columns(["score"]).equals(
        pq.read_table(tmp_path / "local.parquet").drop_columns(["score"])
    )
    rt.engine.dispose()


def test_the_driver_sends_page_size_users_per_ray_data_job(
    trained: tuple[Path, Config], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver's side without Ray: the Ray Data job is replaced by the actor function run in this process."""
    import contextlib

    from recsys.export import ray_export
    from recsys.export.job import ExportContext, ExportOptions, rank_feed_chunk, store_histories
    from recsys.serving import Runtime

    jobs: list[tuple[list[int], int]] = []

    def fake_map(table: dict[str, np.ndarray], make_fn: Any, *, batch_size: int, actors: int, **kw: Any) -> Any:
        assert batch_size == 1  # one chunk per actor call
        jobs.append((table[ray_export.CHUNK].tolist(), actors))
        fn = make_fn()
        for i in range(len(table[ray_export.CHUNK])):
            yield fn({name: col[i : i + 1] for name, col in table.items()})

    monkeypatch.setattr(ray_export, "map_batches_ordered", fake_map)
    monkeypatch.setattr(ray_export, "ray_session", lambda *a: contextlib.nullcontext())
    _, config = trained
    rt = Runtime.from_config(config)
    ctx = ExportContext.from_runtime(rt)
    keys, history = store_histories(rt.engine, ctx, dict(config.event_types))
    opts = ExportOptions(k=20, chunk_size=200)
    allowed = ctx.allowed(opts)
    paged = config.model_copy(update={"ray": config.ray.model_copy(update={"page_size": 450, "actors": 3})})
    got = list(ray_export.run_chunks_on_ray(paged, paged.ray, [1, 2, 4], keys, history, opts, allowed))
    assert jobs == [([1, 2], 2), ([4], 1)]  # 450 // 200 chunks per job; no more actors than chunks
    assert [c for c, _ in got] == [1, 2, 4]
    for c, table in got:
        start, stop = c * 200, min((c + 1) * 200, len(keys))
        expected = rank_feed_chunk(ctx, keys[start:stop].tolist(), history.select(np.arange(start, stop)), opts,
                                   allowed)
        assert table.equals(expected), c

    bad = dict(ctx.versions, model="another-model")
    monkeypatch.setattr(ray_export, "_active_versions", lambda config: bad)
    with pytest.raises(ArtifactError, match="another-model"):
        list(ray_export.run_chunks_on_ray(paged, paged.ray, [0], keys, history, opts, allowed))
    rt.engine.dispose()


def test_ray_actor_refuses_a_catalogue_other_than_the_drivers(trained: tuple[Path, Config]) -> None:
    """The actor's set-up, run in this process: same table as the local engine; another mask is refused."""
    from recsys.export.job import ExportContext, ExportOptions, similar_chunk
    from recsys.export.ray_export import (
        CHUNK,
        PAYLOAD,
        TABLE,
        _similar_payload,
        _table_from_bytes,
        make_chunk_fn,
        worker_settings,
    )
    from recsys.serving import Runtime

    _, config = trained
    rt = Runtime.from_config(config)
    ctx = ExportContext.from_runtime(rt)
    opts = ExportOptions(what="similar", k=5)
    allowed = ctx.allowed(opts)
    fn = make_chunk_fn(worker_settings(config), opts, allowed)
    out = fn({CHUNK: np.array([3]), PAYLOAD: np.array([_similar_payload(list(ctx.ids[:7]))], dtype=object)})
    assert out[CHUNK].tolist() == [3]
    assert _table_from_bytes(out[TABLE][0]).equals(similar_chunk(ctx, np.arange(7), opts, allowed))

    other = allowed.copy()
    other[0] = not other[0]
    with pytest.raises(ArtifactError, match="differs from the driver's"):
        make_chunk_fn(worker_settings(config), opts, other)
    rt.engine.dispose()


def test_worker_settings_make_local_paths_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from recsys.export.ray_export import worker_settings

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    config = Config.model_validate({"data_dir": "d", "artifacts_dir": "a", "database": {"url": "sqlite:///rel.db"},
                                    "encoders": {"text": {"name": "models/tiny"}}})
    data = worker_settings(config)
    assert data["data_dir"] == str(tmp_path / "d") and data["artifacts_dir"] == str(tmp_path / "a")
    assert data["database"]["url"] == f"sqlite:///{tmp_path / 'rel.db'}"
    assert data["encoders"]["text"]["name"] == str(tmp_path / "models" / "tiny")
    assert data["encoders"]["image"]["name"] == config.encoders.image.name  # a model name, not a folder here
    again = Config.model_validate(data)
    assert again.cf == config.cf and again.ray == config.ray
    with pytest.raises(ConfigError, match="in-memory SQLite"):
        worker_settings(Config.model_validate({"database": {"url": "sqlite://"}}))


def test_importing_the_export_engines_does_not_import_ray() -> None:
    """``--engine local`` stays free of Ray: neither the CLI command nor the Ray runner's module loads it."""
    import subprocess
    import sys

    code = (
        "import sys\nimport recsys.cli.export, recsys.export.job, recsys.export.ray_export\n"
        "print('RAY_LOADED' if any(m == 'ray' or m.startswith('ray.') for m in sys.modules) else 'NO_RAY')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "NO_RAY", out.stderr
