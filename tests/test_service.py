"""The Flask service over HTTP: Flask's test client for breadth, gunicorn for the real thing.

Every test runs on a real database (a SQLite file, and PostgreSQL where reachable) loaded with the
generated demo shop, embedded with tiny random encoders and with a trained CF model.
"""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from recsys.config import Config, load_config
from recsys.demo.catalogue import generate_demo
from recsys.ingest import ingest_events, ingest_items
from recsys.store.db import make_engine, upgrade

KEY = "test-key"
REPO = Path(__file__).resolve().parents[1]


def _png(color: tuple[int, int, int] = (200, 30, 30), size: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from recsys.encoders.testing import save_tiny_text_model, tiny_image_encoder, tiny_text_encoder

    path = save_tiny_text_model(tmp_path_factory.mktemp("tiny-text"))
    return {"text_path": path, "text": tiny_text_encoder(path), "image": tiny_image_encoder()}


def _prepare(url: str, data_dir: Path, models: dict[str, Any]) -> Config:
    """Load the demo shop into ``url``, embed it with the tiny encoders, train CF; return the config."""
    from recsys.embed import run_embed
    from recsys.recommend.model import train_feed

    cfg_file = data_dir / "config.yaml"
    data_dir.mkdir(parents=True, exist_ok=True)
    cfg_file.write_text(
        f"data_dir: {data_dir}\ndatabase:\n  url: {url}\nencoders:\n  text:\n    name: {models['text_path']}\n    batch_size: 4\n    max_length: 32\n"
        f"service:\n  api_keys: [{KEY}]\n  max_body_bytes: 200000\n"
    )
    config = load_config(cfg_file, env={})
    engine = make_engine(url)
    upgrade(engine)
    files = generate_demo(data_dir / "demo", n_items=60, n_users=40, seed=1)
    preset = config.ingest.presets["demo"]
    ingest_items(engine, files.items_csv, preset.items, reject_path=data_dir / "r1.jsonl")
    ingest_events(engine, files.events_csv, preset.events, config.event_types, reject_path=data_dir / "r2.jsonl")
    run_embed(engine, config.encoders, text_encoder=models["text"], image_encoder=models["image"])
    train_feed(engine, config)
    from recsys.align.settings import AlignConfig
    from recsys.align.store import train_from_store

    train_from_store(engine, config, AlignConfig(dim=16, hidden_dim=32, epochs=3, ensemble=1, min_items=10, batch_size=16),
                     versions=(models["text"].version, models["image"].version))
    engine.dispose()
    return config


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def module_db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One database of each kind shared by this module's tests (they use distinct users and items)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('svc') / 'recsys.sqlite'}"
        return
    from tests.conftest import scratch_postgres

    with scratch_postgres() as url:
        yield url


@pytest.fixture(scope="module")
def service(module_db_url: str, tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Any]) -> Iterator[tuple[Any, Any, Config]]:
    from recsys.serving import Runtime
    from services.app import create_app

    db_url = module_db_url
    config = _prepare(db_url, tmp_path_factory.mktemp("svc-data") / "data", tiny_models)
    engine = make_engine(db_url)
    rt = Runtime(config, engine, text_encoder=tiny_models["text"], image_encoder=tiny_models["image"])
    rt.reload()
    app = create_app(config, rt)
    yield app.test_client(), rt, config
    if "recsys.impressions" in app.extensions:
        app.extensions["recsys.impressions"].close()
    engine.dispose()


def _eventually(get: Any, done: Any, timeout: float = 60.0) -> Any:
    """``get()`` until ``done(value)`` (background reloads), failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = get()
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"still {value!r} after {timeout} s")
        time.sleep(0.05)


def test_all_endpoints_answer(service: tuple[Any, Any, Config]) -> None:
    client, _rt, _cfg = service
    assert client.get("/healthz").json == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["ready"] is True

    sim = client.get("/v1/items/D0001/similar?k=5")
    assert sim.status_code == 200
    ids = [i["id"] for i in sim.json["items"]]
    assert len(ids) == 5 and "D0001" not in ids and len(set(ids)) == 5
    assert all(i["reasons"] == [{"type": "similar_to", "item": "D0001"}] for i in sim.json["items"])
    assert sim.json["model_version"] and sim.json["index_version"]

    cat = client.get("/v1/items/D0001/similar?k=50&category=mug").json["items"]
    assert cat and all(i["category"] == "mug" for i in cat)

    feed = client.get("/v1/users/U0001/recommendations?k=7")
    assert feed.status_code == 200 and feed.json["cold_start"] is False and len(feed.json["items"]) == 7
    assert all(i["reasons"] for i in feed.json["items"])

    s = client.post("/v1/search", json={"text": "red star mug", "k": 4})
    assert s.status_code == 200 and len(s.json["items"]) == 4
    img = client.post("/v1/search", json={"image": base64.b64encode(_png()).decode(), "k": 3})
    assert img.status_code == 200 and len(img.json["items"]) == 3
    both = client.post("/v1/search", data={"text": "blue cap", "k": "3", "image": (io.BytesIO(_png()), "q.png")},
                       content_type="multipart/form-data")
    assert both.status_code == 200 and len(both.json["items"]) == 3
    personal = client.post("/v1/search", json={"text": "mug", "k": 3, "user_id": "U0002"})
    assert personal.status_code == 200 and {"type": "personalised"} in personal.json["items"][0]["reasons"]

    metrics = client.get("/metrics").data.decode()
    assert 'recsys_requests_total{endpoint="/v1/items/<item_id>/similar",method="GET",status="200"}' in metrics
    assert "recsys_request_latency_seconds_bucket" in metrics and "recsys_artifact_info" in metrics
    spec = client.get("/openapi.json").json
    assert "/v1/users/{user_id}/recommendations" in spec["paths"] and "SearchBody" in spec["components"]["schemas"]


def test_feed_pages_do_not_repeat_and_filters_apply(service: tuple[Any, Any, Config]) -> None:
    client, _rt, _cfg = service
    seen: list[str] = []
    cursor = None
    for _ in range(4):
        url = "/v1/users/U0003/recommendations?k=5" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url).json
        seen += [i["id"] for i in page["items"]]
        cursor = page["next_cursor"]
    assert len(seen) == 20 and len(set(seen)) == 20
    capped = client.get("/v1/users/U0003/recommendations?k=8&max_per_category=1").json["items"]
    assert len({i["category"] for i in capped}) == len(capped)
    other = client.get(f"/v1/users/U0004/recommendations?k=5&cursor={cursor}")
    assert other.status_code == 400 and other.json["error"]["field"] == "query.cursor"
    diverse = client.get("/v1/users/U0003/recommendations?k=8&diversity=0.9").json["items"]
    assert len(diverse) == 8


def test_posted_event_changes_the_next_feed(service: tuple[Any, Any, Config]) -> None:
    client, _rt, _cfg = service
    before = client.get("/v1/users/brand-new/recommendations?k=10").json
    assert before["cold_start"] is True and all(i["reasons"] == [{"type": "popular"}] for i in before["items"])
    r = client.post(
        "/v1/events",
        json={"events": [{"user_id": "brand-new", "item_id": "D0005", "event_type": "purchase"},
                         {"user_id": "brand-new", "item_id": "NOPE", "event_type": "purchase"}]},
        headers={"X-API-Key": KEY},
    )
    assert r.status_code == 207
    assert r.json["inserted"] == 1 and r.json["rejected"][0]["index"] == 1 and "unknown item" in r.json["rejected"][0]["reason"]
    after = client.get("/v1/users/brand-new/recommendations?k=10").json
    assert after["cold_start"] is False
    assert "D0005" not in [i["id"] for i in after["items"]]  # seen items are excluded
    assert [i["id"] for i in after["items"]] != [i["id"] for i in before["items"]]
    again = client.post("/v1/events", json={"events": [{"user_id": "brand-new", "item_id": "D0005", "event_type": "purchase",
                                                         "event_id": "e-1"}]}, headers={"X-API-Key": KEY})
    repeat = client.post("/v1/events", json={"events": [{"user_id": "brand-new", "item_id": "D0005", "event_type": "purchase",
                                                          "event_id": "e-1"}]}, headers={"X-API-Key": KEY})
    assert again.json["inserted"] == 1 and repeat.json == {"inserted": 0, "duplicates": 1, "rejected": []}


def test_put_item_becomes_findable_and_recommendable(service: tuple[Any, Any, Config]) -> None:
    from recsys.errors import UnknownIdError
    from recsys.serving import Runtime

    client, _rt, _cfg = service
    other = Runtime(_cfg, _rt.engine, text_encoder=_rt._text_encoder, image_encoder=_rt._image_encoder)
    other.reload()  # another serving process
    title = "Zanzibar quokka lamp"
    r = client.put("/v1/items/NEW-1", json={"title": title, "description": "A quokka shaped lamp", "category": "lamp"},
                   headers={"X-API-Key": KEY})
    assert r.status_code == 200 and r.json["inserted"] == 1 and r.json["embedded"] == 1 and r.json["servable"] is True
    hits = client.post("/v1/search", json={"text": title, "k": 1}).json["items"]
    assert hits[0]["id"] == "NEW-1"
    assert client.get("/v1/items/NEW-1/similar?k=3").status_code == 200
    lamps = client.get("/v1/users/U0001/recommendations?k=5&category=lamp").json["items"]
    assert [i["id"] for i in lamps] == ["NEW-1"]  # a cold item can be recommended at once
    # the similar-items index was not rebuilt: the new item went into the side buffer of the published one
    from recsys.store.artifacts import active_artifact

    st = _rt._st()
    assert st.similar_index.buffer_size >= 1 and st.versions["index"] == active_artifact(_rt.engine, "index-similar").version
    new = st.row["NEW-1"]
    sims = st.similar_vectors[: len(st.ids)] @ st.similar_vectors[new]
    sims[new] = -np.inf
    ranks = {int(r): int((st.similar_vectors @ st.similar_vectors[r] > sims[r]).sum()) - 1 for r in np.argsort(-sims)[:5]}
    near, rank = min(ranks.items(), key=lambda kv: kv[1])  # an old item with the new one high in its list
    listed = [i["id"] for i in client.get(f"/v1/items/{st.ids[near]}/similar?k={rank + 1}").json["items"]]
    assert "NEW-1" in listed  # its table row is merged with the buffered new item
    # the other process sees the catalogue stamp change, reloads and loads the same published index
    with pytest.raises(UnknownIdError):
        other.similar_items("NEW-1", k=3)
    assert other.refresh_if_changed(every_s=0, wait=True)
    assert other.versions()["index"] == _rt.versions()["index"]
    assert [i.id for i in other.similar_items("NEW-1", k=3).items] == [i.id for i in _rt.similar_items("NEW-1", k=3).items]
    assert not other.refresh_if_changed(every_s=0)  # nothing new since
    batch = client.put("/v1/items", json={"items": [{"id": "NEW-1", "title": title, "description": "A quokka shaped lamp",
                                                     "category": "lamp"}, {"id": "NEW-2", "title": "Second"}]},
                       headers={"X-API-Key": KEY})
    assert batch.json["unchanged"] == 1 and batch.json["inserted"] == 1


def test_a_rebuilt_index_is_published_and_picked_up_without_restart(service: tuple[Any, Any, Config]) -> None:
    from recsys.serving import Runtime
    from recsys.store.artifacts import active_artifact

    client, rt, config = service
    before = client.get("/v1/items/D0002/similar?k=3").json
    assert active_artifact(rt.engine, "index-similar").version == before["index_version"]
    other = Runtime(config, rt.engine, text_encoder=rt._text_encoder, image_encoder=rt._image_encoder)
    other.reload()
    assert other.versions()["index"] == before["index_version"]  # a second process loads the published one
    new = other.rebuild_index()
    rt._checked = 0.0  # do not wait for the refresh interval
    client.get("/v1/items/D0002/similar?k=3")  # notices the new version: reloads in the background
    after = _eventually(lambda: client.get("/v1/items/D0002/similar?k=3").json,
                        lambda body: body["index_version"] == new)
    assert after["index_version"] == new != before["index_version"]
    assert [i["id"] for i in after["items"]] == [i["id"] for i in before["items"]]


def test_a_new_model_is_picked_up_without_restart(service: tuple[Any, Any, Config]) -> None:
    from recsys.recommend.model import train_feed

    client, rt, config = service
    v1 = client.get("/v1/items/D0001/similar?k=3").json["model_version"]
    train_feed(rt.engine, config)
    rt._checked = 0.0  # do not wait for the refresh interval
    v2 = _eventually(lambda: client.get("/v1/items/D0001/similar?k=3").json["model_version"], lambda v: v != v1)
    assert v1 and v2 and v1 != v2


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "status", "field"),
    [
        ("get", "/v1/items/D0001/similar?k=0", {}, 400, "query.k"),
        ("get", "/v1/items/D0001/similar?k=9999", {}, 400, "query.k"),
        ("get", "/v1/items/D0001/similar?k=ten", {}, 400, "query.k"),
        ("get", "/v1/items/D0001/similar?colour=red", {}, 400, "query.colour"),
        ("get", "/v1/items/NOPE/similar", {}, 404, None),
        ("get", "/v1/users/U0001/recommendations?exclude_seen=maybe", {}, 400, "query.exclude_seen"),
        ("get", "/v1/users/U0001/recommendations?diversity=2", {}, 400, "query.diversity"),
        ("get", "/v1/users/U0001/recommendations?cursor=garbage", {}, 400, "query.cursor"),
        ("post", "/v1/search", {"json": {"text": "x", "k": "many"}}, 400, "body.k"),
        ("post", "/v1/search", {"json": {}}, 400, "body"),
        ("post", "/v1/search", {"json": {"image": "not base64!!"}}, 400, "body.image"),
        ("post", "/v1/search", {"json": {"image": base64.b64encode(b"plain text, not an image").decode()}}, 400, "body.image"),
        ("post", "/v1/search", {"json": {"text": "x", "filters": {"colour": "red"}}}, 400, "body.filters.colour"),
        ("post", "/v1/search", {"data": "text=x", "content_type": "text/plain"}, 415, None),
        ("post", "/v1/search", {"data": "{not json", "content_type": "application/json"}, 400, "body"),
        ("post", "/v1/search", {"data": {"image": (b"GIF89a broken", "x.gif")}, "content_type": "multipart/form-data"}, 400, "form.image"),
        ("post", "/v1/search", {"json": {"text": "x" * 300_000}}, 413, None),
        ("post", "/v1/events", {"json": {"events": []}, "headers": {"X-API-Key": KEY}}, 400, "body.events"),
        ("post", "/v1/events", {"json": {"events": [{"user_id": "u", "item_id": "D0001", "event_type": "purchase", "value": "x"}]},
                                "headers": {"X-API-Key": KEY}}, 400, "body.events[0].value"),
        ("post", "/v1/events", {"json": {"events": [{"user_id": "u", "item_id": "D0001", "event_type": "teleport"}]},
                                "headers": {"X-API-Key": KEY}}, 400, None),
        ("post", "/v1/events", {"json": {"events": [{"user_id": "u", "item_id": "D0001", "event_type": "view"}]}}, 401, None),
        ("post", "/v1/events", {"json": {"events": [{"user_id": "u", "item_id": "D0001", "event_type": "view"}]},
                                "headers": {"X-API-Key": "wrong"}}, 401, None),
        ("put", "/v1/items/X", {"json": {"title": ""}, "headers": {"X-API-Key": KEY}}, 400, "body.title"),
        ("put", "/v1/items/X", {"json": {"title": "t", "price": -1}, "headers": {"X-API-Key": KEY}}, 400, "body.price"),
        ("get", "/v1/nothing-here", {}, 404, None),
        ("delete", "/v1/items/D0001/similar", {}, 405, None),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_field(
    service: tuple[Any, Any, Config], method: str, url: str, kwargs: dict[str, Any], status: int, field: str | None
) -> None:
    client, _rt, _cfg = service
    data = kwargs.get("data")
    if isinstance(data, dict):  # fresh file objects for each run of the case
        kwargs = {**kwargs, "data": {k: (io.BytesIO(v[0]), v[1]) if isinstance(v, tuple) else v for k, v in data.items()}}
    r = getattr(client, method)(url, **kwargs)
    assert r.status_code == status, r.json
    assert r.is_json and r.json["error"]["status"] == status and r.json["error"]["message"]
    if field is not None:
        assert r.json["error"]["field"] == field


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _readyz_by_pid(base: str, n: int = 48) -> dict[int, dict[str, Any]]:
    """``n`` concurrent ``GET /readyz`` (8 at a time, so that every worker is kept busy): the last checks
    answered by each serving process, by its pid."""
    from concurrent.futures import ThreadPoolExecutor

    def one(_: int) -> dict[str, Any]:
        r = requests.get(f"{base}/readyz", timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["checks"]

    with ThreadPoolExecutor(8) as pool:
        return {c["pid"]: c for c in pool.map(one, range(n))}


def _children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


@pytest.mark.slow
def test_live_gunicorn_server(db_url: str, tmp_path: Path, tiny_models: dict[str, Any]) -> None:
    """The real deployment path: gunicorn with the production settings (``services/gunicorn_conf.py``: the app
    preloaded in the master, workers forked from it) over a real database, spoken to over TCP.

    Beyond the answers: more than one worker answers; each uses database connections it opened itself (the
    master's pool is never shared); every worker's impression log writes to SQL; a feed model trained and
    activated while it runs is loaded by every worker."""
    from sqlalchemy import select

    from recsys.recommend.model import train_feed
    from recsys.store.models import Impression

    config = _prepare(db_url, tmp_path / "data", tiny_models)
    port = _free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")},
           "RECSYS_CONFIG": str(tmp_path / "data" / "config.yaml")}
    gunicorn = Path(sys.executable).with_name("gunicorn")
    log = tmp_path / "gunicorn.log"
    proc = subprocess.Popen(
        [str(gunicorn), "-c", "python:services.gunicorn_conf", "-w", "2", "-b", f"127.0.0.1:{port}",
         "--timeout", "120", "services.wsgi:app"],
        cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        last = ""
        while True:
            try:
                ready = requests.get(f"{base}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
                last = ready.text
            except requests.RequestException as exc:  # not listening yet, or the workers are still loading
                last = repr(exc)
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not become ready; last /readyz: {last}\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        sim = requests.get(f"{base}/v1/items/D0002/similar", params={"k": 4}, timeout=10)
        assert sim.status_code == 200 and len(sim.json()["items"]) == 4
        assert requests.get(f"{base}/v1/users/live-user/recommendations", timeout=10).json()["cold_start"] is True
        posted = requests.post(f"{base}/v1/events", headers={"X-API-Key": KEY}, timeout=10,
                               json={"events": [{"user_id": "live-user", "item_id": "D0002", "event_type": "purchase"}]})
        assert posted.status_code == 200 and posted.json()["inserted"] == 1
        for _ in range(4):  # every worker reads the user's events from the database
            assert requests.get(f"{base}/v1/users/live-user/recommendations", timeout=10).json()["cold_start"] is False
        bad = requests.get(f"{base}/v1/items/D0002/similar", params={"k": -1}, timeout=10)
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "query.k"
        assert requests.post(f"{base}/v1/search", json={"text": "mug"}, timeout=10).status_code == 200
        assert config.service.api_keys == (KEY,)
        put = requests.put(f"{base}/v1/items/LIVE-1", headers={"X-API-Key": KEY}, timeout=60,
                           json={"title": "Live walnut desk lamp", "category": "lamp"})
        assert put.status_code == 200 and put.json()["servable"] is True
        deadline = time.monotonic() + 60
        answered = 0  # every worker serves the item: the one that took the PUT, and the other after its reload
        while answered < 8:
            got = requests.get(f"{base}/v1/items/LIVE-1/similar", params={"k": 3}, timeout=10)
            answered = answered + 1 if got.status_code == 200 else 0
            if time.monotonic() > deadline:
                pytest.fail(f"LIVE-1 not served by every worker after 60 s: {got.status_code} {got.text}")
            time.sleep(0.05)

        workers = _children(proc.pid)
        assert len(workers) == 2
        seen = _readyz_by_pid(base)
        assert set(seen) == workers, f"answered by {sorted(seen)}, workers {sorted(workers)}"
        for pid, checks in seen.items():  # each worker's connection was opened by that worker, not the master
            assert checks["database_pid"] == pid, checks

        def served(i: int) -> str:
            r = requests.get(f"{base}/v1/items/D{i % 50 + 1:04d}/similar", params={"k": 3}, timeout=30)
            assert r.status_code == 200, r.text
            return str(r.json()["request_id"])

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            request_ids = set(pool.map(served, range(60)))
        engine = make_engine(db_url)
        try:
            deadline = time.monotonic() + 30
            while True:  # written by the workers' own writer threads while they run (not at their exit)
                with engine.connect() as conn:
                    stored = set(conn.execute(select(Impression.request_id)).scalars())
                if request_ids <= stored:
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"{len(request_ids - stored)} of 60 served lists not in SQL after 30 s\n"
                                f"{log.read_text()[-3000:]}")
                time.sleep(0.5)
            counters = {pid: c["impressions"] for pid, c in _readyz_by_pid(base).items()}
            assert set(counters) == workers
            assert all(c["logged"] > 0 and c["written"] == c["logged"] and c["dropped"] == 0
                       for c in counters.values()), counters

            model = train_feed(engine, config)  # a publish: every worker loads it without a restart
        finally:
            engine.dispose()
        deadline = time.monotonic() + 60
        while True:
            versions = {pid: c["model"] for pid, c in _readyz_by_pid(base).items()}
            if set(versions) == workers and set(versions.values()) == {model.version}:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"model {model.version} not loaded by every worker after 60 s: {versions}")
            time.sleep(0.5)
        assert "checked out in process" not in log.read_text()  # no pooled connection crossed a fork
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_the_candidate_regime_for_large_catalogues_serves_through_the_runtime(service: tuple[Any, Any, Config]) -> None:
    """Above service.feed_exact_max_items the feed scores retrieved candidates (a published user-items
    index + similar items of the user's latest items + popular ones) instead of the whole catalogue."""
    from recsys.serving import Runtime
    from recsys.store.artifacts import active_artifact

    _, rt, config = service
    small = config.model_copy(update={"service": config.service.model_copy(update={"feed_exact_max_items": 10})})
    big = Runtime(small, rt.engine, text_encoder=rt._text_encoder, image_encoder=rt._image_encoder)
    big.reload()
    assert big._st().feed is not None and not big._st().feed.exact
    assert active_artifact(rt.engine, "index-user-items") is not None
    seen = set(big.user_history("U0001").items.tolist())
    exact = [i.id for i in rt.recommend("U0001", k=10).items]
    approx = big.recommend("U0001", k=10)
    ids = [i.id for i in approx.items]
    assert len(ids) == 10 and not seen & {big._st().row[i] for i in ids}
    assert len(set(ids) & set(exact)) >= 7  # candidates + a sampled standardisation: close to the exact list
    assert big.recommend("cold-nobody", k=5).cold_start


def test_similar_items_answers_are_cached_per_snapshot(service: tuple[Any, Any, Config]) -> None:
    _, rt, _ = service
    first = rt.similar_items("D0005", k=4)
    assert rt.similar_items("D0005", k=4) is first  # the same question: the cached answer
    assert rt.similar_items("D0005", k=5) is not first  # another question
    rt.reload()  # a new snapshot (model, index or catalogue change) starts with an empty cache
    again = rt.similar_items("D0005", k=4)
    assert again is not first and [i.id for i in again.items] == [i.id for i in first.items]
    original = rt.config
    rt.config = original.model_copy(update={"service": original.service.model_copy(update={"similar_cache_bytes": 0})})
    try:
        assert rt.similar_items("D0005", k=4) is not rt.similar_items("D0005", k=4)
    finally:
        rt.config = original


def test_similar_items_read_the_published_neighbour_table_and_equal_a_live_search(
    service: tuple[Any, Any, Config],
) -> None:
    """The widget's answers come from the table built and published with the index (service.similar_table_k);
    they equal a live index search, with and without filters, and wider or rarer questions still search."""
    from recsys.index.neighbours import IDS_FILE
    from recsys.store.artifacts import active_artifact

    client, rt, config = service
    rt.refresh_if_changed(every_s=0)
    st = rt._st()
    table = st.similar_index.neighbours
    assert table is not None and table.width == config.service.similar_table_k
    assert (Path(active_artifact(rt.engine, "index-similar").path) / IDS_FILE).is_file()
    calls = {"search": 0}
    search = st.similar_index.search

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls["search"] += 1
        return search(*args, **kwargs)

    st.similar_index.search = counting
    original = rt.config
    rt.config = original.model_copy(update={"service": original.service.model_copy(update={"similar_cache_bytes": 0})})
    try:
        category = st.categories[3]
        for item in st.ids[:20]:
            r = st.row[item]
            for kw in ({}, {"exclude": [st.ids[int(table.ids[r, 1])]]}, {"category": category}):
                got = [i.id for i in rt.similar_items(item, k=5, **kw).items]
                allow = rt._allowed(st, kw.get("category"), (), True)
                blocked = [r, *(st.row[e] for e in kw.get("exclude", []))]
                want, _ = search(st.similar_vectors[r], 5, allow=allow, exclude=blocked)
                assert got == [st.ids[int(i)] for i in want], (item, kw)
        table_answers = calls["search"]
        wide = client.get(f"/v1/items/{st.ids[0]}/similar?k={table.width + 1}").json
        assert calls["search"] == table_answers + 1 and len(wide["items"]) == min(table.width + 1, len(st.ids) - 1)
    finally:
        rt.config = original
        del st.similar_index.search
    assert table_answers < 20  # category filters keep few of the 50 stored rows: some searched, most did not


def test_an_incremental_update_equals_a_full_reload(service: tuple[Any, Any, Config]) -> None:
    """Items put (new and changed) are upserted into the loaded state without reading everything again;
    the result serves what a process loading everything anew serves."""
    client, rt, original = service
    # a 60-item catalogue: let the side buffers take a quarter of it (5% would be 3 rows)
    config = original.model_copy(update={"index": original.index.model_copy(update={"max_buffered_fraction": 0.25})})
    rt.config = config
    try:
        _check_incremental_update(client, rt, config)
    finally:
        rt.config = original


def _check_incremental_update(client: Any, rt: Any, config: Config) -> None:
    from recsys.serving import Runtime

    rt.refresh_if_changed(every_s=0, wait=True)
    before = rt._st()
    body = {"items": [
        {"id": "INC-1", "title": "Incremental oak side table", "description": "oak", "category": "table"},
        {"id": "INC-2", "title": "Incremental linen cushion", "category": "cushion", "available": False},
        {"id": before.ids[3], "title": "A new title for an old item", "category": before.categories[3]},
    ]}
    r = client.put("/v1/items", json=body, headers={"X-API-Key": KEY})
    assert r.status_code == 200 and r.json["servable"] is True
    st = rt._st()
    assert st.search is not before.search and st.versions == before.versions  # updated, not reloaded
    assert len(st.ids) == len(before.ids) + 2 and st.similar_index.buffer_size >= 3
    assert before.similar_index.size == len(before.ids)  # the old state's index was not touched
    fresh = Runtime(config, rt.engine, text_encoder=rt._text_encoder, image_encoder=rt._image_encoder)
    fresh.reload()
    full = fresh._st()
    assert full.ids == st.ids and full.titles == st.titles and full.categories == st.categories
    np.testing.assert_array_equal(full.available, st.available)
    np.testing.assert_allclose(full.content, st.content, atol=1e-6)
    np.testing.assert_allclose(full.similar_vectors, st.similar_vectors, atol=1e-6)
    np.testing.assert_allclose(full.item_factors, st.item_factors, atol=1e-6)
    assert full.row == st.row and full.internal_to_row == st.internal_to_row
    for item in ["INC-1", before.ids[3], before.ids[0], before.ids[10]]:
        for kw in ({}, {"category": "table"}, {"available_only": False}):
            assert [i.id for i in rt.similar_items(item, k=5, **kw).items] == \
                   [i.id for i in fresh.similar_items(item, k=5, **kw).items], (item, kw)
    for user in ["U0001", "U0002", "U0007"]:
        assert [i.id for i in rt.recommend(user, k=10).items] == [i.id for i in fresh.recommend(user, k=10).items]
    hits = client.post("/v1/search", json={"text": "Incremental oak side table", "k": 1}).json["items"]
    assert hits[0]["id"] == "INC-1"


def _mapped(a: Any) -> bool:
    """Whether ``a`` is (a view of) a memory-mapped file."""
    import mmap

    while isinstance(a, np.ndarray):
        if isinstance(a, np.memmap) or isinstance(a.base, mmap.mmap):
            return True
        a = a.base
    return False


def test_a_loaded_state_maps_published_arrays_instead_of_copying_them(service: tuple[Any, Any, Config]) -> None:
    """Processes that serve the same published versions share those pages (gunicorn workers after a reload):
    the similar-items vectors are the published index's memory-mapped rows, and the feed ranker's content
    block is the model's mapped block when the serving rows are the model's rows, not private copies."""
    from recsys.recommend.model import train_feed
    from recsys.serving import Runtime

    _, rt, config = service
    train_feed(rt.engine, config)  # a model of the catalogue as it is now (other tests put items)
    other = Runtime(config, rt.engine, text_encoder=rt._text_encoder, image_encoder=rt._image_encoder)
    other.reload()
    other.rebuild_index()  # published without a side buffer, then loaded from disk as every other worker does
    st = other._st()
    assert _mapped(st.similar_vectors)
    assert np.shares_memory(st.similar_vectors, st.similar_index.base_vectors())
    assert tuple(st.feed.model.item_ids) == st.ids  # the demo shop: the model knows every served item, in order
    assert _mapped(st.feed.components.content[0])
    assert other.similar_items("D0005", k=4).items  # and they serve
