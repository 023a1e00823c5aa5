"""Bulk ingestion: formats, column mapping, upserts, idempotency and every bad-input case."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, func, select

from recsys.config import EventMapping, ItemMapping
from recsys.errors import InputFormatError
from recsys.ingest import ingest_events, ingest_items
from recsys.store.models import Event, Item, User

TYPES = {"view": 1.0, "purchase": 8.0, "rating": 1.0}
ITEMS = ItemMapping(id="sku", title="name", text=("name", "desc"), category="cat", image="img", price="price", available="in_stock")
EVENTS = EventMapping(user="user", item="sku", timestamp="when", event_type="kind", value="rating")


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def count(engine: Engine, model: Any) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(model)).scalar_one()


def read_rejects(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


ITEMS_CSV = """sku,name,desc,cat,img,price,in_stock,colour
A1,Red mug,"A mug, red",mugs,images/a1.jpg,9.5,yes,red
A2,Blue cap,A cap,caps,https://cdn.example.com/a2.jpg,12,no,blue
A3,Plain tee,,tees,,,,
"""


def load_items(engine: Engine, tmp_path: Path, text: str = ITEMS_CSV) -> Any:
    path = write_csv(tmp_path / "items.csv", text)
    return ingest_items(engine, path, ITEMS, reject_path=tmp_path / "items.rejects.jsonl")


def test_items_are_loaded_with_mapping_and_resolved_images(engine: Engine, tmp_path: Path) -> None:
    rep = load_items(engine, tmp_path)
    assert (rep.rows, rep.inserted, rep.rejected) == (3, 3, 0)
    with engine.connect() as conn:
        rows = {r.external_id: r for r in conn.execute(select(Item.__table__))}
    a1, a2, a3 = rows["A1"], rows["A2"], rows["A3"]
    assert a1.title == "Red mug" and a1.description == "A mug, red" and a1.category == "mugs"
    assert a1.image == str((tmp_path / "images" / "a1.jpg").resolve())  # relative to the file
    assert a2.image == "https://cdn.example.com/a2.jpg"  # URLs as given
    assert a1.price == 9.5 and a1.available is True and a2.available is False
    assert a1.attributes == {"colour": "red"}  # unmapped columns are kept, not lost
    assert a3.image is None and a3.price is None and a3.available is True and a3.attributes == {}


def test_an_ids_only_items_file_loads_with_the_default_mapping(engine: Engine, tmp_path: Path) -> None:
    """A catalogue with nothing but ids (an ids-only purchase log's items) needs no flag and no preset."""
    path = write_csv(tmp_path / "ids.csv", "item_id\n1881509818\nB0048KGFHU\n")
    rep = ingest_items(engine, path, ItemMapping(), reject_path=tmp_path / "r.jsonl")
    assert (rep.rows, rep.inserted, rep.rejected) == (2, 2, 0)
    with engine.connect() as conn:
        rows = conn.execute(select(Item.external_id, Item.title, Item.image)).all()
    assert sorted(rows) == [("1881509818", "", None), ("B0048KGFHU", "", None)]


def test_items_upsert_updates_changed_rows_only(engine: Engine, tmp_path: Path) -> None:
    load_items(engine, tmp_path)
    with engine.connect() as conn:
        before = dict(conn.execute(select(Item.external_id, Item.content_hash)).all())
    again = load_items(engine, tmp_path)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 3)
    changed = ITEMS_CSV.replace("Blue cap", "Navy cap") + "A4,New,,x,,,,\n"
    rep = load_items(engine, tmp_path, changed)
    assert (rep.inserted, rep.updated, rep.unchanged) == (1, 1, 2)
    with engine.connect() as conn:
        after = dict(conn.execute(select(Item.external_id, Item.content_hash)).all())
        title = conn.execute(select(Item.title).where(Item.external_id == "A2")).scalar_one()
    assert title == "Navy cap"
    assert after["A1"] == before["A1"] and after["A2"] != before["A2"]
    assert count(engine, Item) == 4


def test_bad_item_rows_are_rejected_with_line_and_reason(engine: Engine, tmp_path: Path) -> None:
    text = (
        "sku,name,desc,cat,img,price,in_stock,colour\n"
        "B1,Good,,c,,1,yes,\n"
        ",No id,,c,,1,yes,\n"  # line 3: missing id
        "B3,Bad price,,c,,cheap,yes,\n"  # line 4: wrong type
        "B4,Bad flag,,c,,1,maybe,\n"  # line 5
        '"B5","multi\nline title",,c,,2,yes,\n'  # lines 6-7: a good row spanning two lines
        "B1,Again,,c,,1,yes,\n"  # line 8: duplicate id in the file
        "B6,Too,many,fields,,1,yes,,extra\n"  # line 9
        "B7,Negative,,c,,-3,yes,\n"  # line 10
    )
    rep = load_items(engine, tmp_path, text)
    assert (rep.rows, rep.inserted, rep.rejected) == (8, 2, 6)
    rejects = read_rejects(tmp_path / "items.rejects.jsonl")
    got = [(r["line"], r["field"]) for r in rejects]
    assert got == [(3, "sku"), (4, "price"), (5, "in_stock"), (8, "sku"), (9, None), (10, "price")]
    assert "missing id" in rejects[0]["reason"]
    assert "expected a number, got 'cheap'" in rejects[1]["reason"]
    assert "true/false" in rejects[2]["reason"]
    assert "duplicate id 'B1': first seen at line 2" in rejects[3]["reason"]
    assert "has 9 fields, the header has 8" in rejects[4]["reason"]
    assert rejects[1]["row"]["price"] == "cheap"  # the original row is kept for fixing and re-feeding
    with engine.connect() as conn:
        assert sorted(conn.execute(select(Item.external_id)).scalars()) == ["B1", "B5"]


EVENTS_CSV = """user,sku,when,kind,rating
u1,A1,1700000000,view,
u1,A1,1700000000,view,
u2,A2,2023-11-14,purchase,
u2,A1,2023-11-14T10:00:00+02:00,rating,4
"""


def test_events_append_idempotently_keeping_identical_rows(engine: Engine, tmp_path: Path) -> None:
    load_items(engine, tmp_path)
    path = write_csv(tmp_path / "events.csv", EVENTS_CSV)
    rep = ingest_events(engine, path, EVENTS, TYPES, reject_path=tmp_path / "ev.rejects.jsonl")
    assert (rep.rows, rep.inserted, rep.rejected, rep.new_users) == (4, 4, 0, 2)
    # identical rows are two real events; re-ingesting adds nothing
    again = ingest_events(engine, path, EVENTS, TYPES, reject_path=tmp_path / "ev.rejects.jsonl")
    assert (again.inserted, again.unchanged, again.new_users) == (0, 4, 0)
    assert count(engine, Event) == 4 and count(engine, User) == 2
    # a later export that holds the same row once more adds exactly that one
    path.write_text(EVENTS_CSV + "u1,A1,1700000000,view,\n")
    third = ingest_events(engine, path, EVENTS, TYPES, reject_path=tmp_path / "ev.rejects.jsonl")
    assert third.inserted == 1 and count(engine, Event) == 5
    with engine.connect() as conn:
        rows = conn.execute(select(Event.event_type, Event.ts, Event.value).order_by(Event.id)).all()
    assert rows[2] == ("purchase", 1699920000, None)  # an ISO date is midnight UTC
    assert rows[3] == ("rating", 1699948800, 4.0)  # offsets are honoured


def test_event_id_column_is_the_key(engine: Engine, tmp_path: Path) -> None:
    load_items(engine, tmp_path)
    path = write_csv(tmp_path / "e.csv", "id,user,sku,when,kind,rating\ne1,u1,A1,1,view,\ne2,u1,A1,1,view,\ne1,u1,A2,5,view,\n")
    mapping = EVENTS.model_copy(update={"event_id": "id"})
    rep = ingest_events(engine, path, mapping, TYPES, reject_path=tmp_path / "r.jsonl")
    assert rep.inserted == 2 and rep.unchanged == 1  # e1 twice: the second is the same event


def test_bad_event_rows_are_rejected_and_good_rows_land(engine: Engine, tmp_path: Path) -> None:
    load_items(engine, tmp_path)
    text = (
        "user,sku,when,kind,rating\n"
        "u1,A1,1700000000,view,\n"  # 2 good
        ",A1,1700000000,view,\n"  # 3 missing user id
        "u1,,1700000000,view,\n"  # 4 missing item id
        "u1,A1,yesterday,view,\n"  # 5 unparseable timestamp
        "u1,A1,1700000000,like,\n"  # 6 unknown event type
        "u1,A1,1700000000,rating,five\n"  # 7 value of the wrong type
        "u1,ZZ,1700000000,view,\n"  # 8 unknown item
        "u3,A2,1700000001,purchase,\n"  # 9 good
    )
    path = write_csv(tmp_path / "events.csv", text)
    rep = ingest_events(engine, path, EVENTS, TYPES, reject_path=tmp_path / "ev.jsonl")
    assert (rep.rows, rep.inserted, rep.rejected) == (8, 2, 6)
    rejects = read_rejects(tmp_path / "ev.jsonl")
    assert [(r["line"], r["field"]) for r in rejects] == [
        (3, "user"), (4, "sku"), (5, "when"), (6, "kind"), (7, "rating"), (8, "sku"),
    ]
    reasons = [r["reason"] for r in rejects]
    assert "missing id" in reasons[0]
    assert "cannot parse 'yesterday' as a timestamp" in reasons[2]
    assert "unknown event type 'like'; allowed: purchase, rating, view" in reasons[3]
    assert "expected a number, got 'five'" in reasons[4]
    assert "unknown item 'ZZ'" in reasons[5]
    assert rejects[5]["row"] == {"user": "u1", "sku": "ZZ", "when": "1700000000", "kind": "view", "rating": ""}
    assert count(engine, Event) == 2


def test_jsonl_and_parquet_inputs(engine: Engine, tmp_path: Path) -> None:
    load_items(engine, tmp_path)
    jl = tmp_path / "events.jsonl"
    jl.write_text(
        '{"user": "u1", "sku": "A1", "when": 1700000000, "kind": "view"}\n'
        "not json\n"
        '{"user": 7, "sku": "A2", "when": "2023-01-01", "kind": "purchase", "rating": null}\n'
        '[1, 2]\n'
        '{"user": "u1", "sku": "A1", "when": true, "kind": "view"}\n'
    )
    rep = ingest_events(engine, jl, EVENTS.model_copy(update={"value": None}), TYPES, reject_path=tmp_path / "j.jsonl")
    assert (rep.inserted, rep.rejected) == (2, 3)
    assert [(r["line"], r["field"]) for r in read_rejects(tmp_path / "j.jsonl")] == [(2, None), (4, None), (5, "when")]
    with engine.connect() as conn:
        assert set(conn.execute(select(User.external_id)).scalars()) == {"u1", "7"}

    table = pa.table({"user": ["u9", None, "u9"], "sku": ["A3", "A3", "A2"], "when": [1, 2, 3], "kind": ["view"] * 3, "rating": [1.0, None, 2.5]})
    pq.write_table(table, tmp_path / "events.parquet")
    rep = ingest_events(engine, tmp_path / "events.parquet", EVENTS, TYPES, reject_path=tmp_path / "p.jsonl")
    assert (rep.inserted, rep.rejected) == (2, 1)
    rejects = read_rejects(tmp_path / "p.jsonl")
    assert [(r["row_number"], r["field"]) for r in rejects] == [(2, "user")]  # Parquet: 1-based row numbers


def test_missing_mapped_column_fails_before_writing(engine: Engine, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "items.csv", "id,name\n1,x\n")
    with pytest.raises(InputFormatError, match=r"column 'sku' \(mapped as --id\) is not in the file; columns found: id, name"):
        ingest_items(engine, path, ITEMS, reject_path=tmp_path / "r.jsonl")
    assert count(engine, Item) == 0


@pytest.mark.parametrize(
    ("name", "content", "fmt", "match"),
    [
        ("missing.csv", None, None, "no such file"),
        ("items.xlsx", b"PK\x03\x04", None, "cannot tell the format"),
        ("items.csv", b"\x89PNG\r\n\x1a\n\xff\xfe\x00", None, "not a UTF-8 text file"),
        ("items.csv", b"", None, "empty file"),
        ("items.jsonl", b"sku,name\nA,b\n", None, "first line is not JSON"),
        ("items.parquet", b"sku,name\nA,b\n", None, "not a Parquet file"),
        ("items.csv", b"sku\n", "xml", "format must be one of"),
    ],
)
def test_unreadable_or_wrong_format_fails_before_writing(
    engine: Engine, tmp_path: Path, name: str, content: bytes | None, fmt: str | None, match: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputFormatError, match=match):
        ingest_items(engine, path, ITEMS, fmt=fmt, reject_path=tmp_path / "r.jsonl")
    assert count(engine, Item) == 0
    assert not (tmp_path / "r.jsonl").exists()


@pytest.mark.parametrize("block", [1 << 24, 64])
def test_fast_csv_path_falls_back_per_row_on_a_broken_record(
    sqlite_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    """A malformed record in a large file: rows before it land once, it is rejected, rows after it land."""
    import recsys.ingest.readers as readers

    monkeypatch.setattr(readers, "ARROW_BLOCK_BYTES", block)
    load_items(sqlite_engine, tmp_path)
    lines = [f"u{i},A1,{1700000000 + i},view," for i in range(40)]
    lines[30] = "u30,A1,1700000030,view,,surplus"
    path = write_csv(tmp_path / "events.csv", "user,sku,when,kind,rating\n" + "\n".join(lines) + "\n")
    rep = ingest_events(sqlite_engine, path, EVENTS, TYPES, reject_path=tmp_path / "r.jsonl", chunk_size=8)
    assert (rep.rows, rep.inserted, rep.rejected) == (40, 39, 1)
    assert [(r["line"], r["reason"]) for r in read_rejects(tmp_path / "r.jsonl")] == [(32, "has 6 fields, the header has 5")]
    assert count(sqlite_engine, Event) == 39


def test_a_failed_chunk_stops_the_run_and_keeps_only_committed_chunks(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks are written on a background thread; a write failure is raised, never reported as loaded."""
    import recsys.ingest.events as events

    load_items(engine, tmp_path)
    lines = [f"u{i % 7},A{1 + i % 3},{1700000000 + i},view," for i in range(40)]
    path = write_csv(tmp_path / "events.csv", "user,sku,when,kind,rating\n" + "\n".join(lines) + "\n")
    real = events.insert_events
    calls: list[int] = []

    def failing(conn: Any, rows: list[tuple[Any, ...]]) -> int:
        calls.append(len(rows))
        if len(calls) == 3:
            raise RuntimeError("database went away")
        return real(conn, rows)

    monkeypatch.setattr(events, "insert_events", failing)
    with pytest.raises(RuntimeError, match="database went away"):
        ingest_events(engine, path, EVENTS, TYPES, reject_path=tmp_path / "r.jsonl", chunk_size=8)
    assert calls == [8, 8, 8]  # nothing after the failed chunk was written
    assert count(engine, Event) == 16  # the two committed chunks, not the failed one
    monkeypatch.setattr(events, "insert_events", real)
    rep = ingest_events(engine, path, EVENTS, TYPES, reject_path=tmp_path / "r.jsonl", chunk_size=8)
    assert (rep.rows, rep.inserted, rep.unchanged, rep.rejected) == (40, 24, 16, 0)
    assert count(engine, Event) == 40


def test_events_load_into_an_in_memory_sqlite_database(tmp_path: Path) -> None:
    """Its connections are per thread, so the chunks are written inline rather than on the writer thread."""
    from recsys.store.db import make_engine, upgrade

    eng = make_engine("sqlite://")
    upgrade(eng)
    load_items(eng, tmp_path)
    rep = ingest_events(eng, write_csv(tmp_path / "events.csv", EVENTS_CSV), EVENTS, TYPES, reject_path=tmp_path / "r.jsonl", chunk_size=2)
    assert (rep.rows, rep.inserted, rep.rejected, rep.new_users) == (4, 4, 0, 2)
    assert count(eng, Event) == 4
    eng.dispose()
