"""``recsys export``: rows equal the API's answers; formats; all-or-nothing files; resume; manifest."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.config import Config
from recsys.errors import ConfigError
from recsys.export.job import ExportContext, ExportOptions, run_export
from recsys.export.writers import open_sink
from recsys.store.db import make_engine
from tests.test_service import _prepare, tiny_models  # noqa: F401 - the fixture is used by name


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Any]) -> Iterator[tuple[Any, Any, Config]]:  # noqa: F811
    from recsys.serving import Runtime
    from services.app import create_app

    url = f"sqlite:///{tmp_path_factory.mktemp('exp') / 'recsys.sqlite'}"
    config = _prepare(url, tmp_path_factory.mktemp("exp-data") / "data", tiny_models)
    rt = Runtime(config, make_engine(url), text_encoder=tiny_models["text"], image_encoder=tiny_models["image"])
    rt.reload()
    yield create_app(config, rt).test_client(), rt, config


def _export(rt: Any, config: Config, out: Path, opts: ExportOptions, fmt: str = "parquet", **kw: Any) -> Any:
    ctx = ExportContext.from_runtime(rt)
    return run_export(ctx, opts, lambda spec, schema: open_sink(str(out), fmt, None, rt.engine, spec, schema),
                      engine=rt.engine, event_types=dict(config.event_types), **kw)


def _api_rows(client: Any, url: str) -> list[tuple[str, float]]:
    body = client.get(url).json
    return [(i["id"], i["score"]) for i in body["items"]]


def test_exported_recommendations_equal_the_api(served: tuple[Any, Any, Config], tmp_path: Path) -> None:
    client, rt, config = served
    out = tmp_path / "recs.parquet"
    res = _export(rt, config, out, ExportOptions(k=7, chunk_size=8))
    assert out.is_file() and not out.with_name(out.name + ".parts").exists()
    table = pq.read_table(out)
    assert table.schema.names == ["user_id", "rank", "item_id", "score"]
    users = sorted(set(table.column("user_id").to_pylist()))
    assert res.ids == len(users) >= 30
    for uid in users[:: max(1, len(users) // 12)]:
        rows = table.filter(pa.compute.equal(table.column("user_id"), uid)).to_pylist()
        api = _api_rows(client, f"/v1/users/{uid}/recommendations?k=7")
        assert [r["item_id"] for r in rows] == [a[0] for a in api], uid
        assert np.allclose([r["score"] for r in rows], [a[1] for a in api], atol=1e-5)
        assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    assert manifest["versions"]["model"] == rt.versions()["model"] and manifest["versions"]["index"]
    from recsys.store.artifacts import list_artifacts

    assert any(a.version == res.version for a in list_artifacts(rt.engine, "export"))


def test_filters_and_diversity_match_the_api(served: tuple[Any, Any, Config], tmp_path: Path) -> None:
    client, rt, config = served
    out = tmp_path / "recs.jsonl"
    opts = ExportOptions(k=5, diversity=0.7, max_per_category=2, chunk_size=16)
    _export(rt, config, out, opts, fmt="jsonl", ids=["U0002", "U0005", "nobody-yet"])
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    for uid in ("U0002", "U0005", "nobody-yet"):
        mine = [(r["item_id"], r["score"]) for r in lines if r["user_id"] == uid]
        api = _api_rows(client, f"/v1/users/{uid}/recommendations?k=5&diversity=0.7&max_per_category=2")
        assert [m[0] for m in mine] == [a[0] for a in api] and len(mine) == 5, uid


def test_exported_similar_items_equal_the_api(served: tuple[Any, Any, Config], tmp_path: Path) -> None:
    client, rt, config = served
    out = tmp_path / "similar.csv"
    res = _export(rt, config, out, ExportOptions(what="similar", k=4, chunk_size=10), fmt="csv")
    import pyarrow.csv as pacsv

    table = pacsv.read_csv(out, convert_options=pacsv.ConvertOptions(column_types={"item_id": pa.string(),
                                                                                   "similar_item_id": pa.string()}))
    assert res.ids == len(ExportContext.from_runtime(rt).ids)
    for item in ("D0001", "D0010", "D0033"):
        rows = table.filter(pa.compute.equal(table.column("item_id"), item)).to_pylist()
        api = _api_rows(client, f"/v1/items/{item}/similar?k=4")
        assert [r["similar_item_id"] for r in rows] == [a[0] for a in api]


def test_an_interrupted_export_leaves_no_file_and_resumes(served: tuple[Any, Any, Config], tmp_path: Path) -> None:
    _, rt, config = served
    out = tmp_path / "recs.parquet"
    ctx = ExportContext.from_runtime(rt)
    opts = ExportOptions(k=5, chunk_size=6)

    class Boom(RuntimeError):
        pass

    def failing(spec: dict[str, Any], schema: pa.Schema) -> Any:
        sink = open_sink(str(out), "parquet", None, rt.engine, spec, schema)
        real = sink.write_chunk
        calls = {"n": 0}

        def write(chunk: int, table: pa.Table) -> None:
            if calls["n"] == 3:
                raise Boom("disk full")
            calls["n"] += 1
            real(chunk, table)

        sink.write_chunk = write  # type: ignore[method-assign]
        return sink

    with pytest.raises(Boom):
        run_export(ctx, opts, failing, engine=rt.engine, event_types=dict(config.event_types))
    assert not out.exists()
    resumed = _export(rt, config, out, opts)
    assert resumed.resumed_chunks == 3
    fresh = _export(rt, config, tmp_path / "fresh.parquet", opts)
    assert pq.read_table(out).equals(pq.read_table(tmp_path / "fresh.parquet"))
    assert fresh.resumed_chunks == 0


def test_resuming_with_other_settings_is_refused(served: tuple[Any, Any, Config], tmp_path: Path) -> None:
    _, rt, _config = served
    out = tmp_path / "recs.parquet"
    ctx = ExportContext.from_runtime(rt)
    open_sink(str(out), "parquet", None, rt.engine, {"options": {"k": 5}}, pa.schema([]))
    with pytest.raises(ConfigError, match="other settings.*--restart"):
        open_sink(str(out), "parquet", None, rt.engine, {"options": {"k": 6}}, pa.schema([]))
    assert ctx.feed is not None


def test_export_to_a_sql_table(served: tuple[Any, Any, Config], tmp_path: Path) -> None:
    from sqlalchemy import text

    _, rt, config = served
    ctx = ExportContext.from_runtime(rt)
    opts = ExportOptions(k=3, chunk_size=7)
    run_export(ctx, opts, lambda spec, schema: open_sink(None, "parquet", "feed_export", rt.engine, spec, schema),
               engine=rt.engine, event_types=dict(config.event_types))
    _export(rt, config, tmp_path / "same.parquet", opts)
    with rt.engine.connect() as conn:
        rows = conn.execute(text("SELECT user_id, rank, item_id FROM feed_export ORDER BY user_id, rank")).all()
        tables = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))}
    ref = pq.read_table(tmp_path / "same.parquet").sort_by([("user_id", "ascending"), ("rank", "ascending")])
    assert [tuple(r) for r in rows] == list(zip(*(ref.column(c).to_pylist() for c in ("user_id", "rank", "item_id"))))
    assert "feed_export__staging" not in tables and "feed_export__spec" not in tables


def test_bad_options_are_clear_errors(served: tuple[Any, Any, Config], tmp_path: Path) -> None:
    _, rt, _ = served
    with pytest.raises(ConfigError, match="k must be between"):
        ExportOptions(k=0)
    with pytest.raises(ConfigError, match="exactly one of --out FILE or --table"):
        open_sink(None, "parquet", None, rt.engine, {}, pa.schema([]))
    with pytest.raises(ConfigError, match="table name"):
        open_sink(None, "parquet", "bad name;", rt.engine, {}, pa.schema([]))
