"""Issue 11 (hardening): bounded caches, database outages, NUL bytes and blank ids, cursors, the cost of an
event batch, HTTP conformance and safe retries.

Every test runs the Flask app over a real database (a SQLite file and PostgreSQL) loaded with the demo
shop (the fixtures of ``tests/test_service.py``); the chunked-body test speaks HTTP to a live server.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import logging
import shutil
import stat
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import make_url

from recsys.config import Config
from recsys.store.models import Event
from tests.live import live_server
from tests.test_service import KEY, module_db_url, service, tiny_models  # noqa: F401 - fixtures

AUTH = {"X-API-Key": KEY}


def _with_service(rt: Any, **changes: Any) -> Config:
    """``rt.config`` with ``service`` keys changed (the caller restores the original)."""
    original = rt.config
    rt.config = original.model_copy(update={"service": original.service.model_copy(update=changes)})
    return original


def _count_events(rt: Any, **where: Any) -> int:
    with rt.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Event).filter_by(**where)).scalar_one())


# ---------------------------------------------------------------------------------------------- 3. caches
def test_similar_cache_stays_within_its_byte_bound_under_3000_distinct_keys(service: Any) -> None:
    """Distinct similar-items questions (no key needed) cannot grow a worker beyond service.similar_cache_bytes."""
    client, rt, _ = service
    bound = 256 * 1024
    original = _with_service(rt, similar_cache_bytes=bound)
    st = rt._st()
    ids = st.ids[:60]
    try:
        client.get(f"/v1/items/{ids[0]}/similar?k=5")  # warm up the code paths before measuring
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i in range(3000):  # 60 items x 50 values of k: 3,000 distinct keys
            r = client.get(f"/v1/items/{ids[i % len(ids)]}/similar?k={1 + (i // len(ids)) % 50}&available_only=false")
            assert r.status_code == 200
        impressions = client.application.extensions.get("recsys.impressions")
        if impressions is not None:  # served lists wait in the impression log's own (count-bounded) queue
            assert impressions.flush(60)
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert grown < bound + 3 * 1024 * 1024, f"the worker grew by {grown / 2**20:.1f} MiB"
        cache = st.similar_cache
        assert cache is not None and 0 < cache.nbytes <= bound and len(cache) < 3000
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        rt.config = original


# ---------------------------------------------------------------------------------------------- 4. outage
@contextlib.contextmanager
def _database_down(rt: Any, url: str) -> Iterator[None]:
    """Make the service's own database unreachable, then reachable again (same engine, no restart).

    PostgreSQL: connections to the database are refused (``ALLOW_CONNECTIONS false``) and the open ones
    terminated. SQLite: the folder holding the file is moved away (the pool closed), so opening fails.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        admin = create_engine(parsed.set(drivername="postgresql+psycopg", database="postgres"), isolation_level="AUTOCOMMIT")
        name = parsed.database
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n AND pid <> pg_backend_pid()"),
                         {"n": name})
        try:
            yield
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            admin.dispose()
        return
    folder = Path(parsed.database).parent
    away = folder.with_name(folder.name + ".away")
    rt.engine.dispose()
    shutil.move(folder, away)
    try:
        yield
    finally:
        shutil.move(away, folder)


def test_a_database_outage_is_a_503_reads_from_memory_go_on_and_it_recovers(
    service: Any, module_db_url: str, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    client, rt, _ = service
    rt.refresh_if_changed(every_s=0, wait=True)
    event_body = {"events": [{"user_id": "outage-user", "item_id": "D0003", "event_type": "view", "event_id": "o-1"}]}
    with caplog.at_level(logging.INFO), _database_down(rt, module_db_url):
        for _ in range(15):
            r = client.post("/v1/events", json=event_body, headers=AUTH)
            assert r.status_code == 503, r.json
            assert int(r.headers["Retry-After"]) > 0
            assert r.json["error"]["status"] == 503 and r.json["error"]["dependency"] == "database"
            put = client.put("/v1/items/OUT-1", json={"title": "Outage lamp"}, headers=AUTH)
            assert put.status_code == 503 and put.json["error"]["dependency"] == "database"
            sim = client.get("/v1/items/D0001/similar?k=5")  # held in memory: served
            assert sim.status_code == 200 and len(sim.json["items"]) == 5 and "degraded" not in sim.json
            feed = client.get("/v1/users/U0001/recommendations?k=5")  # the user's events cannot be read
            assert feed.status_code == 200 and feed.json["degraded"] is True and len(feed.json["items"]) == 5
            found = client.post("/v1/search", json={"text": "mug", "k": 3, "user_id": "U0001"})
            assert found.status_code == 200 and found.json["degraded"] is True
        assert client.get("/readyz").status_code == 503
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and len(errors) <= 4, [r.getMessage() for r in errors]  # one line per failure kind, not per request
    assert not any(r.exc_info for r in caplog.records if r.levelno >= logging.WARNING)
    assert all("unavailable" in r.getMessage() for r in errors)
    deadline = time.monotonic() + 30
    while (r := client.post("/v1/events", json=event_body, headers=AUTH)).status_code != 200:  # no restart
        assert r.status_code == 503 and time.monotonic() < deadline
        time.sleep(0.2)
    assert r.json["inserted"] == 1
    feed = client.get("/v1/users/U0001/recommendations?k=5").json
    assert "degraded" not in feed and feed["cold_start"] is False


# ---------------------------------------------------------------------------------------------- 5. NUL bytes, blank ids
@pytest.mark.parametrize(
    ("method", "url", "body", "field"),
    [
        ("get", "/v1/users/a%00b/recommendations", None, "path.user_id"),
        ("get", "/v1/items/a%00b/similar", None, "path.item_id"),
        ("put", "/v1/items/%20", {"title": "blank id"}, "path.item_id"),
        ("put", "/v1/items/a%00b", {"title": "nul id"}, "path.item_id"),
        ("put", "/v1/items", {"items": [{"id": " ", "title": "blank"}]}, "body.items[0].id"),
        ("put", "/v1/items", {"items": [{"id": "a\x00b", "title": "nul"}]}, "body.items[0].id"),
        ("put", "/v1/items/NUL-T", {"title": "a\x00b"}, "body.title"),
        ("put", "/v1/items/NUL-D", {"title": "t", "description": "x\x00"}, "body.description"),
        ("put", "/v1/items/NUL-A", {"title": "t", "attributes": {"k": ["\x00"]}}, "body.attributes"),
        ("post", "/v1/events", {"events": [{"user_id": "a\x00b", "item_id": "D0001", "event_type": "view"}]},
         "body.events[0].user_id"),
        ("post", "/v1/events", {"events": [{"user_id": "u", "item_id": "D0\x0001", "event_type": "view"}]},
         "body.events[0].item_id"),
        ("post", "/v1/events", {"events": [{"user_id": "u", "item_id": "D0001", "event_type": "view", "event_id": "e\x00"}]},
         "body.events[0].event_id"),
        ("post", "/v1/events", {"events": [{"user_id": " ", "item_id": "D0001", "event_type": "view"}]},
         "body.events[0].user_id"),
        ("post", "/v1/search", {"text": "mug\x00", "k": 3}, "body.text"),
        ("post", "/v1/search", {"text": "mug", "user_id": "\x00"}, "body.user_id"),
    ],
)
def test_nul_bytes_and_blank_ids_are_a_400_naming_the_field(service: Any, method: str, url: str, body: Any, field: str) -> None:
    client, _, _ = service
    r = getattr(client, method)(url, json=body, headers=AUTH)
    assert r.status_code == 400, r.json
    assert r.json["error"]["field"] == field


def test_ingest_rejects_a_nul_row_and_keeps_the_good_ones(engine: Any, tmp_path: Path) -> None:
    from recsys.config import EventMapping, ItemMapping, load_config
    from recsys.ingest import ingest_events, ingest_items

    items = tmp_path / "items.csv"
    items.write_bytes(b"item_id,title\ni1,good one\ni2,bad \x00 title\ni3,good three\n")
    rep = ingest_items(engine, items, ItemMapping(title="title"), reject_path=tmp_path / "ri.jsonl")
    assert (rep.inserted, rep.rejected) == (2, 1)
    reject = json.loads((tmp_path / "ri.jsonl").read_text().splitlines()[0])
    assert reject["field"] == "title" and "NUL" in reject["reason"]
    events = tmp_path / "events.csv"
    events.write_bytes(b"user_id,item_id,timestamp,event_id\nu1,i1,100,a\nu\x002,i1,101,b\nu3,i3,102,c\nu4,i3,103,d\x00\n")
    rep = ingest_events(engine, events, EventMapping(event_id="event_id"), load_config(env={}).event_types,
                        reject_path=tmp_path / "re.jsonl")
    assert (rep.inserted, rep.rejected) == (2, 2)
    fields = [json.loads(line)["field"] for line in (tmp_path / "re.jsonl").read_text().splitlines()]
    assert fields == ["user_id", "event_id"]


# ---------------------------------------------------------------------------------------------- 6. cursors
def _forge(payload: bytes, secret: bytes) -> str:
    import hmac

    mac = hmac.new(secret, payload, hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(mac + payload).decode().rstrip("=")


def test_cursor_secret_is_generated_once_stored_0600_and_never_derived(tmp_path: Path) -> None:
    from recsys.config import load_config
    from recsys.serving.cursor_secret import cursor_secret

    cfg = load_config(env={"RECSYS_DATA_DIR": str(tmp_path / "d")})
    first = cursor_secret(cfg)
    path = tmp_path / "d" / "cursor_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(first) >= 32
    assert cursor_secret(cfg) == first  # every worker and restart reads the same key
    other = load_config(env={"RECSYS_DATA_DIR": str(tmp_path / "e"), "RECSYS_DATABASE_URL": cfg.database_url})
    assert cursor_secret(other) != first  # the same settings elsewhere do not give the same key
    given = load_config(env={"RECSYS_DATA_DIR": str(tmp_path / "d"), "RECSYS_SERVICE_CURSOR_SECRET": "s" * 32})
    assert cursor_secret(given) == b"s" * 32


def test_forged_truncated_oversized_and_ill_typed_cursors_are_a_400(service: Any) -> None:
    client, rt, config = service
    url = "/v1/users/U0003/recommendations?k=5"
    page = client.get(url).json
    good = page["next_cursor"]
    assert client.get(f"{url}&cursor={good}").status_code == 200
    derived = hashlib.sha256(f"recsys-cursor:{config.database_url}".encode()).digest()  # the old, guessable key
    forged = _forge(zlib.compress(json.dumps({"u": "U0003", "s": list(range(500))}).encode()), derived)
    assert len(forged) < 4096
    secret = rt._secret
    bomb = zlib.compress(b"{" + b" " * 5_000_000 + b"}")
    cases = {
        "forged with the key derived from the database URL": forged,
        "truncated": good[: len(good) // 2],
        "oversized": "A" * 5000,
        "not base64": "%%%%",
        "a list for served rows' items": _forge(zlib.compress(json.dumps({"u": "U0003", "s": [[1], [2]]}).encode()), secret),
        "not an object": _forge(zlib.compress(b"[1, 2]"), secret),
        "served rows as a string": _forge(zlib.compress(json.dumps({"u": "U0003", "s": "123"}).encode()), secret),
        "negative rows": _forge(zlib.compress(json.dumps({"u": "U0003", "s": [-5]}).encode()), secret),
        "not zlib": _forge(b"plain", secret),
        "a decompression bomb": _forge(bomb, secret),
    }
    for name, cursor in cases.items():
        r = client.get("/v1/users/U0003/recommendations", query_string={"k": 5, "cursor": cursor})
        assert r.status_code == 400, (name, r.status_code, r.json)
        assert r.json["error"]["field"] == "query.cursor", name


# ---------------------------------------------------------------------------------------------- 7. events cost
def test_an_event_batch_reads_only_its_own_users_and_items(service: Any) -> None:
    """POST /v1/events looks up the batch's users and items, never the whole tables."""
    client, rt, _ = service
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()))

    event.listen(rt.engine, "before_cursor_execute", seen)
    try:
        r = client.post("/v1/events", headers=AUTH, json={"events": [
            {"user_id": "cost-1", "item_id": "D0002", "event_type": "view"},
            {"user_id": "U0001", "item_id": "D0004", "event_type": "click"}]})
    finally:
        event.remove(rt.engine, "before_cursor_execute", seen)
    assert r.status_code == 200 and r.json["inserted"] == 2
    reads = [s for s in statements if s.upper().startswith("SELECT") and (" FROM users" in s or " FROM items" in s)]
    assert reads and all(" WHERE " in s.upper() for s in reads), reads


# ---------------------------------------------------------------------------------------------- 9. HTTP conformance
def test_405_names_the_allowed_methods(service: Any) -> None:
    client, _, _ = service
    r = client.delete("/v1/items/D0001/similar")
    assert r.status_code == 405 and r.is_json
    assert "GET" in {m.strip() for m in r.headers["Allow"].split(",")}


def test_a_chunked_body_over_the_limit_is_a_413(service: Any) -> None:
    client, rt, config = service
    app = client.application
    limit = config.service.max_body_bytes
    with live_server(app) as base:
        parts = urlsplit(base)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        body = json.dumps({"text": "x" * (limit + 1000)}).encode()
        conn.putrequest("POST", "/v1/search")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        try:
            for start in range(0, len(body), 16384):
                chunk = body[start : start + 16384]
                conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading everything
        resp = conn.getresponse()
        data = json.loads(resp.read())
        conn.close()
    assert resp.status == 413 and data["error"]["status"] == 413


def test_openapi_lists_the_error_statuses_with_their_schema(service: Any) -> None:
    client, _, _ = service
    spec = client.get("/openapi.json").json
    err = {"$ref": "#/components/schemas/ErrorResponse"}
    assert {"status", "message", "field", "dependency"} <= set(spec["components"]["schemas"]["ErrorDetail"]["properties"])
    ops = {(path, method): op for path, methods in spec["paths"].items() for method, op in methods.items()}
    writes = [("/v1/events", "post"), ("/v1/items/{item_id}", "put"), ("/v1/items", "put")]
    for key in writes:
        for status in ("400", "401", "403", "413", "415", "503"):
            assert ops[key]["responses"][status]["content"]["application/json"]["schema"] == err, (key, status)
    assert "404" in ops[("/v1/items/{item_id}/similar", "get")]["responses"]
    assert "Retry-After" in ops[("/v1/events", "post")]["responses"]["503"]["headers"]
    partial = ops[("/v1/events", "post")]["responses"]["207"]["content"]["application/json"]["schema"]
    assert partial == {"$ref": "#/components/schemas/EventsResponse"}
    for key in [("/v1/search", "post"), ("/v1/users/{user_id}/recommendations", "get")]:
        assert {"400", "503"} <= set(ops[key]["responses"])


@pytest.mark.parametrize(
    ("method", "url", "body", "field"),
    [
        ("post", "/v1/events", {"events": [{"user_id": "u", "item_id": "D0001", "event_type": "view", "timestamp": -1}]},
         "body.events[0].timestamp"),
        ("post", "/v1/events", {"events": [{"user_id": "u", "item_id": "D0001", "event_type": "view", "timestamp": True}]},
         "body.events[0].timestamp"),
        ("post", "/v1/events", {"events": [{"user_id": "u", "item_id": "D0001", "event_type": "view", "timestamp": "-1"}]},
         "body.events[0].timestamp"),
        ("put", "/v1/items/AV-1", {"title": "t", "available": 0}, "body.available"),
        ("put", "/v1/items/AV-1", {"title": "t", "available": "yes"}, "body.available"),
        ("post", "/v1/search", {"text": "mug", "filters": {"available_only": 0}}, "body.filters.available_only"),
        ("get", "/v1/items/D0001/similar?k=3&k=4", None, "query.k"),
        ("get", "/v1/users/U0001/recommendations?category=mug&category=cap", None, "query.category"),
    ],
)
def test_negative_timestamps_loose_booleans_and_repeated_parameters_are_refused(
    service: Any, method: str, url: str, body: Any, field: str
) -> None:
    client, _, _ = service
    r = getattr(client, method)(url, json=body, headers=AUTH)
    assert r.status_code == 400, r.json
    assert r.json["error"]["field"] == field


def test_multipart_search_reads_available_only_as_text(service: Any) -> None:
    client, _, _ = service
    ok = client.post("/v1/search", data={"text": "mug", "k": "3", "available_only": "false"}, content_type="multipart/form-data")
    assert ok.status_code == 200 and len(ok.json["items"]) == 3
    bad = client.post("/v1/search", data={"text": "mug", "available_only": "maybe"}, content_type="multipart/form-data")
    assert bad.status_code == 400 and bad.json["error"]["field"] == "form.available_only"


# ---------------------------------------------------------------------------------------------- 10. retries
def test_a_white_space_search_text_is_a_400_naming_the_field(service: Any) -> None:
    """Found by schemathesis: ``{"text": "\\f"}`` reached the encoder and answered 500."""
    client, _, _ = service
    for body in ({"text": "\f"}, {"text": " \t\n", "mode": "hybrid", "facets": []}, {"text": "\u00a0", "mode": "semantic"}):
        res = client.post("/v1/search", json=body)
        assert res.status_code == 400, (body, res.status_code, res.get_json())
        assert res.get_json()["error"]["field"] == "body.text"


def test_a_retried_batch_with_an_idempotency_key_is_stored_once(service: Any) -> None:
    client, rt, _ = service
    body = {"events": [{"user_id": "retry-user", "item_id": "D0006", "event_type": "view"},
                       {"user_id": "retry-user", "item_id": "D0007", "event_type": "click"}]}  # no event_id, no timestamp
    headers = {**AUTH, "Idempotency-Key": "batch-0001"}
    first = client.post("/v1/events", json=body, headers=headers)
    assert first.status_code == 200 and first.json["inserted"] == 2
    time.sleep(1.1)  # "now" moved on: without the key the retry would be two new events
    again = client.post("/v1/events", json=body, headers=headers)
    assert again.status_code == 200 and again.json["inserted"] == 2 and again.json["replayed"] is True
    user = _user_id(rt, "retry-user")
    assert _count_events(rt, user_id=user) == 2
    other = client.post("/v1/events", json={"events": body["events"][:1]}, headers=headers)
    assert other.status_code == 422  # the same key with another batch
    bad = client.post("/v1/events", json=body, headers={**AUTH, "Idempotency-Key": "has space"})
    assert bad.status_code == 400 and bad.json["error"]["field"] == "header.Idempotency-Key"


def test_concurrent_retries_with_one_key_store_the_batch_once(service: Any) -> None:
    client, rt, _ = service
    app = client.application
    body = {"events": [{"user_id": "race-user", "item_id": f"D00{10 + i}", "event_type": "view"} for i in range(5)]}
    answers: list[Any] = []

    def post() -> None:
        answers.append(app.test_client().post("/v1/events", json=body, headers={**AUTH, "Idempotency-Key": "race-1"}))

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.status_code for a in answers] == [200] * 4
    assert sorted(bool(a.json.get("replayed")) for a in answers) == [False, True, True, True]
    assert _count_events(rt, user_id=_user_id(rt, "race-user")) == 5


def test_event_ids_are_scoped_per_user(service: Any) -> None:
    client, rt, _ = service
    for user in ("scope-a", "scope-b"):
        r = client.post("/v1/events", headers=AUTH,
                        json={"events": [{"user_id": user, "item_id": "D0008", "event_type": "view", "event_id": "shared-1"}]})
        assert r.status_code == 200 and r.json["inserted"] == 1, (user, r.json)
    repeat = client.post("/v1/events", headers=AUTH,
                         json={"events": [{"user_id": "scope-b", "item_id": "D0008", "event_type": "view", "event_id": "shared-1"}]})
    assert repeat.json == {"inserted": 0, "duplicates": 1, "rejected": []}


def test_ingest_stays_idempotent_across_the_per_user_key_migration(db_url: str, tmp_path: Path) -> None:  # noqa: F811
    """Events loaded before migration 0003 (one key per event id) are re-keyed per user: loading the same
    file again adds nothing, and another user's event with a used id is kept."""
    from recsys.config import EventMapping, ItemMapping, load_config
    from recsys.ingest import ingest_events, ingest_items
    from recsys.store.db import make_engine, upgrade

    eng = make_engine(db_url)
    upgrade(eng, "0002")
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\ni1,one\ni2,two\n")
    with eng.begin() as conn:
        conn.execute(text("INSERT INTO items (external_id, title, description, attributes, available, content_hash, "
                          "created_at, updated_at) VALUES ('i1', 'one', '', '{}', true, 'x', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO users (external_id, attributes, created_at) VALUES ('u1', '{}', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO events (event_key, user_id, item_id, event_type, ts) "
                          "SELECT 'id:ev-1', u.id, i.id, 'view', 100 FROM users u, items i"))
    upgrade(eng)
    with eng.connect() as conn:
        keys = conn.execute(text("SELECT event_key FROM events")).scalars().all()
    assert len(keys) == 1 and keys[0].startswith("e:") and keys[0].endswith(":ev-1")
    ingest_items(eng, items, ItemMapping(title="title"), reject_path=tmp_path / "ri.jsonl")
    events = tmp_path / "events.csv"
    events.write_text("user_id,item_id,timestamp,event_id\nu1,i1,100,ev-1\nu2,i1,100,ev-1\n")
    types = load_config(env={}).event_types
    first = ingest_events(eng, events, EventMapping(event_id="event_id"), types, reject_path=tmp_path / "re.jsonl")
    assert first.inserted == 1  # u1's ev-1 was there already; u2's is another event
    again = ingest_events(eng, events, EventMapping(event_id="event_id"), types, reject_path=tmp_path / "re.jsonl")
    assert again.inserted == 0
    eng.dispose()


def _user_id(rt: Any, external: str) -> int:
    from recsys.store.models import User

    with rt.engine.connect() as conn:
        return int(conn.execute(select(User.id).where(User.external_id == external)).scalar_one())
