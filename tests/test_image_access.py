"""Image references under the access policy (issue 11, items 1 and 2), below the HTTP layer.

Local paths only under the allowed roots (``..``, absolute paths elsewhere and symlinks leading out
refused); URLs only http(s) to public addresses, every redirect hop checked, the connection made to the
checked address; every download under an overall deadline and a size cap. The refused cases are checked
to be refused *before* anything is read: the local servers count the requests they get.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from recsys.config import Config, ItemMapping
from recsys.encoders import errors as E
from recsys.encoders.access import ImagePolicy, address_problem, check_reference, resolve_local_image
from recsys.store.image_roots import image_policy, image_roots, ingest_roots
from recsys.encoders.errors import ImageLoadError
from recsys.encoders.images import load_image
from recsys.errors import ImageAccessError
from recsys.store.models import Item
from tests import image_servers as srv

PNG = srv.png_bytes()


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    """``root/images/ok.png``, ``outside/secret.png`` and symlinks in root pointing in and out."""
    root, outside = tmp_path / "shop", tmp_path / "outside"
    (root / "images").mkdir(parents=True)
    outside.mkdir()
    (root / "images" / "ok.png").write_bytes(PNG)
    (outside / "secret.png").write_bytes(PNG)
    (root / "images" / "out.png").symlink_to(outside / "secret.png")
    (root / "images" / "in.png").symlink_to(root / "images" / "ok.png")
    return root, outside


# ---------------------------------------------------------------------------------------------- local paths
def test_local_paths_must_resolve_under_a_root(tmp_path: Path) -> None:
    root, outside = _tree(tmp_path)
    ok = resolve_local_image("images/ok.png", [root])
    assert ok == (root / "images" / "ok.png").resolve()
    assert resolve_local_image(str(root / "images" / "in.png"), [root]) == ok  # a symlink staying inside
    for ref in ["../../etc/passwd", "images/../../outside/secret.png", "/etc/passwd", str(outside / "secret.png"),
                "images/out.png", str(root / "images" / "out.png"), "~/x.png"]:
        with pytest.raises(ImageAccessError) as info:
            resolve_local_image(ref, [root])
        assert info.value.reason == "outside_roots" and "outside the folders" in info.value.detail, ref
    with pytest.raises(ImageAccessError, match="not allowed here"):
        resolve_local_image("images/ok.png", [])


def test_a_policy_refuses_local_files_before_opening_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, outside = _tree(tmp_path)
    policy = ImagePolicy(roots=(str(root.resolve()),))
    assert load_image(str(root / "images" / "ok.png"), 10_000, policy=policy).size == (32, 32)
    opened: list[str] = []
    real_open = Path.open

    def spy(self: Path, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", spy)
    for ref in [str(outside / "secret.png"), str(root / "images" / "out.png"), str(root / ".." / "outside" / "secret.png")]:
        with pytest.raises(ImageLoadError) as info:
            load_image(ref, 10_000, policy=policy)
        assert info.value.reason == E.REFUSED
    assert opened == []


# ---------------------------------------------------------------------------------------------- addresses
@pytest.mark.parametrize(("addr", "problem"), [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"), ("172.16.0.1", "private"),
    ("192.168.1.1", "private"), ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"), ("0.0.0.0", "unspecified"), ("240.0.0.1", "reserved"), ("100.64.0.1", "private"),
    ("::ffff:127.0.0.1", "loopback"), ("64:ff9b::a00:1", "private"), ("2002:7f00:1::", "loopback"),
    ("fd00::1", "private"), ("93.184.216.34", None), ("2606:4700::1111", None),
])
def test_only_public_addresses_by_default(addr: str, problem: str | None) -> None:
    import ipaddress

    assert address_problem(ipaddress.ip_address(addr), allow_private=False) == problem


def test_allow_private_opens_private_ranges_only() -> None:
    import ipaddress

    assert address_problem(ipaddress.ip_address("10.1.2.3"), allow_private=True) is None
    assert address_problem(ipaddress.ip_address("fd00::1"), allow_private=True) is None
    for addr in ("127.0.0.1", "169.254.169.254", "::1"):
        assert address_problem(ipaddress.ip_address(addr), allow_private=True) is not None


# ---------------------------------------------------------------------------------------------- downloads
def _load(url: str, policy: ImagePolicy) -> Any:
    return load_image(url, 10_000, policy=policy)


def test_urls_to_non_public_addresses_are_refused_without_a_request() -> None:
    with srv.serve({"/a.png": srv.image()}) as s:
        policy = ImagePolicy(timeout_s=3)
        for url in [f"{s.url}/a.png", f"http://localhost:{s.port}/a.png", f"http://[::ffff:127.0.0.1]:{s.port}/a.png",
                    "http://10.0.0.7/a.png", "http://169.254.169.254/latest/meta-data/", "http://[::1]/a.png",
                    "http://0.0.0.0/a.png", f"http://127.1:{s.port}/a.png", f"http://2130706433:{s.port}/a.png",
                    f"http://0x7f.0.0.1:{s.port}/a.png"]:  # other spellings of 127.0.0.1: resolved, then checked
            with pytest.raises(ImageLoadError) as info:
                _load(url, policy)
            assert info.value.reason == E.REFUSED and "address" in info.value.detail, (url, info.value.detail)
        for url in ["file:///etc/passwd", "ftp://example.com/a.png", "gopher://x/", "http://user:pw@example.com/a.png"]:
            with pytest.raises(ImageLoadError) as info:
                _load(url, policy)
            assert info.value.reason == E.REFUSED, url
        assert sum(s.hits.values()) == 0
        allowed = ImagePolicy(allowed_hosts=frozenset({f"127.0.0.1:{s.port}"}), timeout_s=3)
        assert _load(f"{s.url}/a.png", allowed).size == (32, 32)
        assert s.hits["/a.png"] == 1


def test_every_redirect_hop_is_checked() -> None:
    with srv.serve({"/a.png": srv.image()}) as inner, srv.serve({
        "/to-loopback": srv.redirect(f"{inner.url}/a.png"),
        "/to-metadata": srv.redirect("http://169.254.169.254/latest/meta-data/"),
        "/to-file": srv.redirect("file:///etc/passwd"),
        "/loop": srv.redirect("/loop"),
        "/to-self": srv.redirect("/ok.png"),
        "/ok.png": srv.image(),
    }) as outer:
        policy = ImagePolicy(allowed_hosts=frozenset({f"127.0.0.1:{outer.port}"}), timeout_s=3, max_redirects=3)
        for path in ["/to-loopback", "/to-metadata", "/to-file"]:
            with pytest.raises(ImageLoadError) as info:
                _load(outer.url + path, policy)
            assert info.value.reason == E.REFUSED, (path, info.value)
        with pytest.raises(ImageLoadError, match="more than 3 redirects"):
            _load(outer.url + "/loop", policy)
        assert outer.hits["/loop"] == 4
        assert _load(outer.url + "/to-self", policy).size == (32, 32)  # a hop to an allowed address is followed
        assert sum(inner.hits.values()) == 0  # the loopback target was never asked


def test_the_connection_goes_to_the_checked_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """One DNS lookup per hop, and the connection goes to its answer (no second lookup that a rebinding
    DNS server could answer with another address); Host header and name stay the URL's."""
    import recsys.encoders.access as access

    route = srv.echo_host()
    with srv.serve({"/a.png": route}) as s:
        lookups: list[str] = []
        answers = {"cdn.shop.test": ["127.0.0.1"], "rebind.test": ["93.184.216.34", "127.0.0.1"]}
        real = socket.getaddrinfo

        def fake_getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
            if host not in answers:  # the IP literal the connection is made to: no DNS involved
                return real(host, port, *args, **kwargs)
            lookups.append(host)
            n = sum(h == host for h in lookups)
            addr = answers[host][min(n, len(answers[host])) - 1]  # a different answer on each later call
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (addr, port))]

        monkeypatch.setattr(access.socket, "getaddrinfo", fake_getaddrinfo)
        policy = ImagePolicy(allowed_hosts=frozenset({"*.shop.test"}), timeout_s=2)
        assert _load(f"http://cdn.shop.test:{s.port}/a.png", policy).size == (32, 32)
        assert lookups == ["cdn.shop.test"] and route.hosts == [f"cdn.shop.test:{s.port}"]
        # checked public on the first answer: the fetch connects there (unreachable here), never to the
        # loopback address a second lookup would give
        with pytest.raises(ImageLoadError) as info:
            _load(f"http://rebind.test:{s.port}/a.png", ImagePolicy(timeout_s=1))
        assert info.value.reason == E.FETCH_FAILED
        assert lookups.count("rebind.test") == 1 and s.hits["/a.png"] == 1


def test_https_checks_the_url_host_while_connecting_to_the_checked_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """TLS over the pinned connection: SNI and the certificate check use the URL's host name."""
    import ssl

    import trustme

    import recsys.encoders.access as access
    import recsys.encoders.fetch as fetch

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("img.shop.test").configure_cert(server_ctx)
    route = srv.echo_host()
    real = socket.getaddrinfo

    def fake_getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host.endswith(".shop.test"):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(access.socket, "getaddrinfo", fake_getaddrinfo)
    policy = ImagePolicy(allowed_hosts=frozenset({"*.shop.test"}), timeout_s=3)
    with srv.serve({"/a.png": route}, ssl_context=server_ctx) as s, ca.cert_pem.tempfile() as ca_file:
        with pytest.raises(ImageLoadError) as info:  # not signed by a CA in certifi's bundle
            _load(f"https://img.shop.test:{s.port}/a.png", policy)
        assert info.value.reason == E.FETCH_FAILED and "CERTIFICATE_VERIFY_FAILED" in info.value.detail
        monkeypatch.setattr(fetch, "_ca_file", lambda: ca_file)
        assert _load(f"https://img.shop.test:{s.port}/a.png", policy).size == (32, 32)
        assert route.hosts == [f"img.shop.test:{s.port}"]
        with pytest.raises(ImageLoadError) as info:  # same address, another name: the certificate does not match
            _load(f"https://other.shop.test:{s.port}/a.png", policy)
        assert info.value.reason == E.FETCH_FAILED and "other.shop.test" in info.value.detail, info.value.detail
        assert route.hosts == [f"img.shop.test:{s.port}"]


@pytest.mark.parametrize("route", ["/trickle", "/slow-headers"])
def test_a_download_has_an_overall_deadline(route: str) -> None:
    """A server sending a byte a second never trips a per-read timeout; the deadline ends it anyway."""
    with srv.serve({"/trickle": srv.trickle(PNG[:20]), "/slow-headers": srv.slow_headers(20)}) as s:
        policy = ImagePolicy(allowed_hosts=frozenset({f"127.0.0.1:{s.port}"}), timeout_s=1.5)
        t0 = time.monotonic()
        with pytest.raises(ImageLoadError) as info:
            load_image(s.url + route, 10_000, policy=policy, timeout=1.5)
        took = time.monotonic() - t0
        assert info.value.reason == E.FETCH_FAILED and "deadline of 1.5 s" in info.value.detail, info.value.detail
        assert took < 2.5, took


def test_a_download_has_a_size_cap_without_content_length() -> None:
    with srv.serve({"/endless": srv.endless(seconds=20)}) as s:
        policy = ImagePolicy(allowed_hosts=frozenset({f"127.0.0.1:{s.port}"}), timeout_s=10, max_bytes=200_000)
        t0 = time.monotonic()
        with pytest.raises(ImageLoadError, match="limit of 200000 bytes"):
            _load(s.url + "/endless", policy)
        assert time.monotonic() - t0 < 5


# ---------------------------------------------------------------------------------------------- ingest
def test_ingest_rejects_image_references_outside_the_policy(engine: Engine, tmp_path: Path) -> None:
    """Each refused reference is a reject row naming the image column; the good rows land; the file's
    folder is recorded, so its images stay readable (and the outside ones never are)."""
    from recsys.ingest import ingest_items

    root, outside = _tree(tmp_path)
    rows = {
        "ok": "images/ok.png",
        "url": "https://images.example.com/a.png",
        "dots": "../../etc/passwd",
        "dots2": "images/../../outside/secret.png",
        "abs": str(outside / "secret.png"),
        "etc": "/etc/passwd",
        "link": "images/out.png",
        "file": "file:///etc/passwd",
        "s3": "s3://bucket/a.png",
        "loop": "http://127.0.0.1:8000/a.png",
        "ten": "http://10.0.0.7/a.png",
        "meta": "http://169.254.169.254/latest/meta-data/",
    }
    (root / "items.jsonl").write_text("".join(json.dumps({"item_id": k, "title": k, "image": v}) + "\n" for k, v in rows.items()))
    config = Config.model_validate({"data_dir": str(tmp_path / "data")})
    policy = image_policy(config, ingest_roots(config, root / "items.jsonl"))
    report = ingest_items(engine, root / "items.jsonl", ItemMapping(id="item_id", title="title", image="image"),
                          reject_path=tmp_path / "rejects.jsonl", policy=policy)
    assert report.inserted == 2 and report.rejected == len(rows) - 2
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert {r["row"]["item_id"] for r in rejects} == set(rows) - {"ok", "url"}
    assert all(r["field"] == "image" and "refused" in r["reason"] for r in rejects)
    by_id = {r["row"]["item_id"]: r["reason"] for r in rejects}
    assert "outside the folders" in by_id["link"] and "scheme 'file'" in by_id["file"] and "loopback" in by_id["loop"]
    assert "link-local" in by_id["meta"] and "private" in by_id["ten"]
    with engine.connect() as conn:
        stored = dict(conn.execute(select(Item.external_id, Item.image)).all())
    assert stored == {"ok": str((root / "images" / "ok.png").resolve()), "url": rows["url"]}
    assert root.resolve() in image_roots(config, engine) and outside.resolve() not in image_roots(config, engine)
    assert root.resolve() not in image_roots(config)  # recorded in the database, not in the config


def test_check_reference_is_what_the_api_stores(tmp_path: Path) -> None:
    root, outside = _tree(tmp_path)
    policy = ImagePolicy(roots=(str((root / "images").resolve()),))
    assert check_reference("ok.png", policy) == str((root / "images" / "ok.png").resolve())
    assert check_reference("https://cdn.example.com/a.png?x=1", policy) == "https://cdn.example.com/a.png?x=1"
    assert check_reference("http://cdn.internal/a.png", policy) == "http://cdn.internal/a.png"  # names: checked on fetch
    for ref in ["../../outside/secret.png", "out.png", "http://127.0.0.1/a.png", "http://[fe80::1]/a.png", "javascript:alert(1)"]:
        with pytest.raises(ImageAccessError):
            check_reference(ref, policy)
