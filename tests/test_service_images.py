"""Item images through the API (issue 11, items 1 and 2), on SQLite and PostgreSQL.

- A slow image URL (a local server sending one byte a second) never holds ``PUT /v1/items`` longer than
  ``service.upsert_wait_s``; the embedding goes on in the background, the image's failure is recorded on
  that item (which is served with its text vector), and no later PUT fetches it again.
- Image references outside the policy (paths outside ``<data_dir>/images``, loopback/private/link-local
  addresses, other schemes) are a 400 naming ``items[i].image``; a redirect from an allowed host to a
  loopback one is refused when fetched. The local servers count requests: refused URLs were never asked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from recsys.config import Config
from recsys.store.db import make_engine
from recsys.store.models import Item
from tests import image_servers as srv
from tests.test_service import KEY, _eventually, _prepare, tiny_models  # noqa: F401 - tiny_models is a fixture

PNG = srv.png_bytes()
WAIT_S = 2.0
FETCH_S = 4.0
MARGIN_S = 1.5
H = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, srv.Server]]:
    with srv.serve({"/a.png": srv.image()}) as target, \
            srv.serve({"/slow.png": srv.trickle(PNG[:25])}) as slow, \
            srv.serve({"/to-loopback": srv.redirect(f"{target.url}/a.png")}) as redirector:
        yield {"target": target, "slow": slow, "redirector": redirector}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Any],  # noqa: F811
        servers: dict[str, srv.Server]) -> Iterator[tuple[Any, Any, Config, Path]]:
    from recsys.serving import Runtime
    from services.app import create_app

    if request.param == "sqlite":
        yield from _app(f"sqlite:///{tmp_path_factory.mktemp('img-svc') / 'recsys.sqlite'}", tmp_path_factory, tiny_models,
                        servers, Runtime, create_app)
        return
    from tests.conftest import scratch_postgres

    with scratch_postgres() as url:
        yield from _app(url, tmp_path_factory, tiny_models, servers, Runtime, create_app)


def _app(url: str, tmp_path_factory: pytest.TempPathFactory, models: dict[str, Any], servers: dict[str, srv.Server],
         runtime_cls: Any, create_app: Any) -> Iterator[tuple[Any, Any, Config, Path]]:
    data_dir = tmp_path_factory.mktemp("img-svc-data") / "data"
    base = _prepare(url, data_dir, models)
    raw = base.model_dump()
    raw["service"].update(upsert_wait_s=WAIT_S)
    raw["encoders"]["image"].update(fetch_timeout_s=FETCH_S)
    raw["images"] = {"allowed_hosts": [f"127.0.0.1:{servers['slow'].port}", f"127.0.0.1:{servers['redirector'].port}"]}
    config = Config.model_validate(raw)
    (data_dir / "images").mkdir()
    (data_dir / "images" / "ok.png").write_bytes(PNG)
    (data_dir / "images" / "ok2.png").write_bytes(srv.png_bytes((200, 40, 40)))
    outside = data_dir.parent / "outside.png"
    outside.write_bytes(PNG)
    (data_dir / "images" / "out.png").symlink_to(outside)
    engine = make_engine(url)
    rt = runtime_cls(config, engine, text_encoder=models["text"], image_encoder=models["image"])
    rt.reload()
    yield create_app(config, rt).test_client(), rt, config, outside
    engine.dispose()


def _put(client: Any, item_id: str, body: dict[str, Any]) -> tuple[Any, float]:
    t0 = time.monotonic()
    r = client.put(f"/v1/items/{item_id}", json=body, headers=H)
    return r, time.monotonic() - t0


def _image_error(rt: Any, item_id: str) -> str | None:
    from recsys.embed import IMAGE, stored_errors

    with rt.engine.connect() as conn:
        internal = conn.execute(select(Item.id).where(Item.external_id == item_id)).scalar_one()
    return dict(stored_errors(rt.engine, IMAGE, rt._image_encoder.version)).get(internal)


def test_a_slow_image_never_holds_a_put_longer_than_upsert_wait(app: tuple[Any, Any, Config, Path],
                                                                servers: dict[str, srv.Server]) -> None:
    client, rt, _config, _ = app
    slow = servers["slow"]
    slow_id = f"SLOW-{id(rt)}"
    before = slow.hits["/slow.png"]  # the servers are shared by the SQLite and PostgreSQL runs
    r, took = _put(client, slow_id, {"title": "Slowly served lamp", "image": f"{slow.url}/slow.png"})
    assert r.status_code == 200, r.json
    assert r.json["inserted"] == 1 and r.json["servable"] is False
    assert took < WAIT_S + MARGIN_S, took
    # a later PUT with another (local) image is not held up, and does not fetch the slow one again
    r, took = _put(client, f"LOCAL-{id(rt)}", {"title": "Quick local lamp", "image": "ok.png"})
    assert r.status_code == 200 and r.json["servable"] is True and r.json["embedded"] == 2, r.json
    assert took < WAIT_S + MARGIN_S, took
    assert slow.hits["/slow.png"] == before + 1
    # the slow image ends at the fetch deadline: recorded on that item, which is served by its text vector
    error = _eventually(lambda: _image_error(rt, slow_id), lambda e: e is not None, timeout=FETCH_S + 20)
    assert "fetch_failed" in error and "deadline" in error, error
    _eventually(lambda: client.get(f"/v1/items/{slow_id}/similar?k=3").status_code, lambda s: s == 200, timeout=30)
    r, took = _put(client, f"LOCAL2-{id(rt)}", {"title": "Another lamp", "image": "ok2.png"})
    assert r.json["servable"] is True and took < WAIT_S + MARGIN_S
    r, _ = _put(client, slow_id, {"title": "Slowly served lamp", "image": f"{slow.url}/slow.png"})
    assert r.json["unchanged"] == 1
    assert slow.hits["/slow.png"] == before + 1  # never retried inside another request


def test_refused_image_references_are_a_400_naming_the_field(app: tuple[Any, Any, Config, Path],
                                                             servers: dict[str, srv.Server]) -> None:
    client, rt, _config, outside = app
    target = servers["target"]
    before = sum(target.hits.values())
    refused = {
        "/etc/passwd": "outside the folders",
        "../../etc/passwd": "outside the folders",
        str(outside): "outside the folders",
        "out.png": "outside the folders",  # a symlink in <data_dir>/images leading out
        f"{target.url}/a.png": "loopback",
        "http://10.0.0.7/a.png": "private",
        "http://169.254.169.254/latest/meta-data/": "link-local",
        "http://[::1]/a.png": "loopback",
        "file:///etc/passwd": "scheme 'file'",
        "ftp://example.com/a.png": "scheme 'ftp'",
    }
    for ref, why in refused.items():
        r, _ = _put(client, "BAD-1", {"title": "Bad", "image": ref})
        assert r.status_code == 400 and r.json["error"]["field"] == "body.image", (ref, r.json)
        assert why in r.json["error"]["message"], (ref, r.json)
        r = client.put("/v1/items", headers=H, json={"items": [{"id": "GOOD-1", "title": "Good"},
                                                              {"id": "BAD-2", "title": "Bad", "image": ref}]})
        assert r.status_code == 400 and r.json["error"]["field"] == "body.items[1].image", (ref, r.json)
    with rt.engine.connect() as conn:
        assert conn.execute(select(Item.id).where(Item.external_id.in_(["BAD-1", "BAD-2", "GOOD-1"]))).first() is None
    assert sum(target.hits.values()) == before


def test_a_redirect_to_loopback_is_refused_when_fetched(app: tuple[Any, Any, Config, Path],
                                                        servers: dict[str, srv.Server]) -> None:
    client, rt, _config, _ = app
    target, redirector = servers["target"], servers["redirector"]
    before = (redirector.hits["/to-loopback"], sum(target.hits.values()))
    for item_id, url in [(f"REDIR-{id(rt)}", f"{redirector.url}/to-loopback"),
                         (f"NAMED-{id(rt)}", f"http://localhost:{target.port}/a.png")]:  # a name resolving to loopback
        r, took = _put(client, item_id, {"title": "Redirected lamp", "image": url})
        assert r.status_code == 200 and took < WAIT_S + MARGIN_S, r.json
        assert r.json["image_errors"][0]["reason"] == "refused" and r.json["image_errors"][0]["id"] == item_id, r.json
        assert "loopback" in r.json["image_errors"][0]["detail"]
        assert "refused" in (_image_error(rt, item_id) or "")
    assert (redirector.hits["/to-loopback"], sum(target.hits.values())) == (before[0] + 1, before[1])
