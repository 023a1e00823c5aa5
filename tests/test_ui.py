"""The playground's routes through Flask's test client, on a real SQLite file with the demo shop.

Pages answer, escape hostile text, carry a strict CSP and no inline script; ``/media`` serves only an
item's stored picture from the image roots, as cached thumbnails with cache headers, else a placeholder.
The browser tests (tests/test_ui_browser.py) drive the same pages in Chromium.
"""

from __future__ import annotations

import copy
import io
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from recsys.config import Config
from recsys.store.db import make_engine
from tests.ui_shop import HOSTILE_ID, HOSTILE_TITLE, KEY, build_ui_shop


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from recsys.encoders.testing import save_tiny_text_model, tiny_image_encoder, tiny_text_encoder
    from recsys.serving import Runtime
    from services.app import create_app

    path = save_tiny_text_model(tmp_path_factory.mktemp("tiny-text"))
    tiny = {"text_path": path, "text": tiny_text_encoder(path), "image": tiny_image_encoder()}
    config = build_ui_shop(tmp_path_factory.mktemp("ui"), tiny=tiny)
    engine = make_engine(config.database_url)
    rt = Runtime(config, engine, text_encoder=tiny["text"], image_encoder=tiny["image"])
    rt.reload()
    app = create_app(config, rt)
    yield {"client": app.test_client(), "rt": rt, "config": config, "engine": engine}
    engine.dispose()


class Page(HTMLParser):
    """The tags of a page that the checks look at."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.imgs: list[dict[str, str | None]] = []
        self.scripts: list[dict[str, str | None]] = []
        self.inline: list[str] = []
        self.tiles: list[str] = []
        self.links: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        if tag == "script":
            self.scripts.append(a)
        if tag == "a" and a.get("href"):
            self.links.append(a["href"] or "")
        self.inline += [f"{tag}[{k}]" for k in a if k == "style" or k.startswith("on")]
        if tag == "li" and a.get("data-item-id") and "tile" in (a.get("class") or ""):
            self.tiles.append(a["data-item-id"] or "")


PAGES = ["/ui/search", "/ui/search?q=red+star+mug", "/ui/items/D0002", f"/ui/items/{HOSTILE_ID}", "/ui/users",
         "/ui/users/U0001", "/ui/users/U0001/feed", "/ui/users/U0001/history", "/ui/users/nobody-yet", "/ui/overview",
         "/ui/experiments"]


@pytest.mark.parametrize("url", PAGES)
def test_pages_answer_with_a_strict_policy_and_no_inline_script(shop: dict[str, Any], url: str) -> None:
    res = shop["client"].get(url)
    assert res.status_code == 200, res.data[:500]
    assert res.mimetype == "text/html"
    csp = res.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe" not in csp
    assert res.headers["X-Content-Type-Options"] == "nosniff"
    assert re.fullmatch(r"app;dur=[0-9.]+", res.headers["Server-Timing"])
    page = Page(res.get_data(as_text=True))
    assert all(s.get("src") for s in page.scripts), "inline <script>"
    assert page.inline == []
    assert all(i.get("alt") for i in page.imgs), "an image without alt text"


def test_hostile_text_is_escaped(shop: dict[str, Any]) -> None:
    client = shop["client"]
    for url in (f"/ui/items/{HOSTILE_ID}", "/ui/search?q=mug&k=100", "/ui/search?q=%3Cscript%3Ealert(1)%3C/script%3E"):
        html = client.get(url).get_data(as_text=True)
        assert "<script>alert" not in html and "<img src=x" not in html and "<b>1" not in html
    item = client.get(f"/ui/items/{HOSTILE_ID}").get_data(as_text=True)
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt; mug" in item
    assert "&lt;img src=x onerror=alert(1)&gt;" in item  # an attribute value
    assert "X&lt;b&gt;1" in item
    assert HOSTILE_TITLE not in client.get("/ui/search?q=mug&k=100").get_data(as_text=True)
    missing = client.get("/ui/items/%3Cscript%3Ex")
    assert missing.status_code == 404 and b"<script>x" not in missing.data and b"&lt;script&gt;x" in missing.data


def test_search_results_and_filters(shop: dict[str, Any]) -> None:
    client = shop["client"]
    page = Page(client.get("/ui/search?q=mug&k=8").get_data(as_text=True))
    shown = [i for i in page.imgs if i.get("id") != "preview"]  # the upload preview has no src until a file is chosen
    assert len(page.tiles) == 8 and len(shown) == 8 and all((i["src"] or "").startswith("/media/items/") for i in shown)
    mugs = Page(client.post("/ui/search", data={"q": "star", "category": "mug", "k": "50", "available_only": "on"})
                .get_data(as_text=True))
    cats = {c for c in re.findall(r'<span class="cat">([^<]*)</span>', client.post(
        "/ui/search", data={"q": "star", "category": "mug", "k": "50"}).get_data(as_text=True))}
    assert mugs.tiles and cats == {"mug"}
    prices = client.get("/ui/search?q=star&price_min=10&price_max=20&k=50").get_data(as_text=True)
    assert all(10 <= float(p) <= 20 for p in re.findall(r'<span class="price">([0-9.,]+)</span>', prices))


def test_image_upload_search(shop: dict[str, Any]) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 30, 30)).save(buf, format="PNG")
    res = shop["client"].post("/ui/search", data={"image": (io.BytesIO(buf.getvalue()), "red.png"), "k": "5"},
                              content_type="multipart/form-data")
    assert res.status_code == 200 and len(Page(res.get_data(as_text=True)).tiles) == 5
    assert b"the picture red.png" in res.data
    bad = shop["client"].post("/ui/search", data={"image": (io.BytesIO(b"not a picture"), "x.png")},
                              content_type="multipart/form-data")
    assert bad.status_code == 400 and b"not a readable image" in bad.data


@pytest.mark.parametrize(("url", "status", "words"), [
    ("/ui/search?q=mug&k=0", 400, b"greater than or equal to 1"),
    ("/ui/search?q=mug&k=100000", 400, b"form.k: Input should be less than or equal to"),
    ("/ui/search?q=mug&price_min=cheap", 400, b"price_min"),
    ("/ui/users/U0001?diversity=2", 400, b"query.diversity"),
    ("/ui/users/U0001?cursor=forged", 400, b"query.cursor"),
    ("/ui/items/no-such-item", 404, b"unknown item id"),
    ("/ui/evaluation.png", 404, b"no evaluation plot"),
])
def test_bad_input_is_a_clear_html_error(shop: dict[str, Any], url: str, status: int, words: bytes) -> None:
    res = shop["client"].get(url)
    assert res.status_code == status and res.mimetype == "text/html" and words in res.data, res.data[:800]


def test_item_page_shows_similar_items_with_shares_and_users(shop: dict[str, Any]) -> None:
    client, rt = shop["client"], shop["rt"]
    html = client.get("/ui/items/D0002").get_data(as_text=True)
    page = Page(html)
    served = [it.id for it in rt.similar_items("D0002", k=12).items]
    assert page.tiles == served  # the API's answer, in its order
    split = r'<data value="([0-9.]+)">[^<]*</data>\s*<span class="split">= content (-?[0-9.]+) \+ co-interaction (-?[0-9.]+)'
    splits = re.findall(split, html)
    assert len(splits) == len(served)
    for score, content, cf in splits:
        assert abs(float(score) - float(content) - float(cf)) <= 0.002  # the two terms make the score
    users = re.findall(r'href="/ui/users/([^"]+)"', html)
    assert users, "users who interacted with it"


def test_feed_pages_with_the_cursor_and_reflects_a_posted_event(shop: dict[str, Any]) -> None:
    client = shop["client"]
    first_html = client.get("/ui/users/U0002").get_data(as_text=True)
    first = Page(first_html).tiles
    nxt = re.search(r'href="(/ui/users/U0002\?cursor=[^"]+)" rel="next"', first_html)
    assert len(first) == 12 and nxt
    second = Page(client.get(nxt.group(1).replace("&amp;", "&")).get_data(as_text=True)).tiles
    assert second and not set(first) & set(second)

    bought = first[0]
    res = client.post("/v1/events", json={"events": [{"user_id": "U0002", "item_id": bought, "event_type": "purchase"}]},
                      headers={"X-API-Key": KEY})
    assert res.status_code == 200
    after = Page(client.get("/ui/users/U0002/feed").get_data(as_text=True)).tiles
    assert bought not in after and after != first
    assert f'data-item-id="{bought}"' in client.get("/ui/users/U0002").get_data(as_text=True).split('id="feed-box"')[0]


def test_feed_controls(shop: dict[str, Any]) -> None:
    client = shop["client"]
    mugs = client.get("/ui/users/U0003?category=mug").get_data(as_text=True)
    assert set(re.findall(r'<span class="cat">([^<]*)</span>', mugs.split('id="feed-box"')[1])) == {"mug"}
    capped = client.get("/ui/users/U0003?max_per_category=1").get_data(as_text=True).split('id="feed-box"')[1]
    cats = re.findall(r'<span class="cat">([^<]*)</span>', capped)
    assert len(cats) == len(set(cats))
    assert client.get("/ui/users/U0003?diversity=0.8").status_code == 200


def test_overview_counts_failures_versions_and_plot(shop: dict[str, Any]) -> None:
    client, config = shop["client"], shop["config"]
    html = client.get("/ui/overview").get_data(as_text=True)
    assert "X-broken" in html and "X-escape" not in html.split('id="failures"')[0]
    assert re.search(r"<th scope=\"row\">Items</th><td>66</td>", html)
    assert "feed <code>" in html and "align <code>" in html and "index-similar <code>" in html
    assert "validation.temporal.ndcg@10" in html and "recall_at_10" in html and "val.text_to_image.R@10" in html
    assert "No plot yet" in html
    folder = config.data_dir / "evaluation"
    folder.mkdir(exist_ok=True)
    Image.new("RGB", (30, 20), (0, 90, 200)).save(folder / "temporal.png")
    html = client.get("/ui/overview").get_data(as_text=True)
    assert 'src="/ui/evaluation.png"' in html
    plot = client.get("/ui/evaluation.png")
    assert plot.status_code == 200 and plot.mimetype == "image/png"
    (folder / "temporal.png").unlink()


def test_experiment_report_page(shop: dict[str, Any]) -> None:
    """The page shows what ``recsys experiments report`` computes: per variant lists, clicks, CTR with its
    interval, and interleaving wins with the binomial p."""
    from recsys.experiments.report import experiment_report
    from recsys.experiments.settings import ExperimentConfig
    from recsys.experiments.store import find_experiment, save_experiment
    from services.ui import experiments as pages

    client, config, engine = shop["client"], shop["config"], shop["engine"]
    app = client.application
    app.extensions["recsys.experiments"].refresh_s = 0.0
    exps = {"ui-ab": "ab", "ui-il": "interleave"}
    for name, mode in exps.items():
        exp = ExperimentConfig.model_validate({"name": name, "mode": mode, "variants": [
            {"name": "hyb"}, {"name": "pop", "ranker": "popularity"}]})
        save_experiment(engine, exp, config.experiments)
        events = []
        for u in range(1, 21):
            got = client.get(f"/v1/users/U{u:04d}/recommendations?k=4").json
            assert got["experiment"] == name
            if u % 3:  # 14 of the 20 users click the first item
                events.append({"user_id": f"U{u:04d}", "item_id": got["items"][0]["id"], "event_type": "click",
                               "request_id": got["request_id"], "position": 0})
        assert client.post("/v1/events", json={"events": events}, headers={"X-API-Key": KEY}).status_code == 200
        save_experiment(engine, exp.model_copy(update={"active": False}), config.experiments, replace=True)
    assert app.extensions["recsys.impressions"].flush(10)
    app.extensions.pop("recsys.ui.aggregates", None)
    listing = client.get("/ui/experiments").get_data(as_text=True)
    assert 'href="/ui/experiments/ui-ab"' in listing and 'href="/ui/experiments/ui-il"' in listing
    for name in exps:
        res = client.get(f"/ui/experiments/{name}")
        assert res.status_code == 200 and "unsafe" not in res.headers["Content-Security-Policy"]
        html = res.get_data(as_text=True)
        assert Page(html).inline == []
        rep = experiment_report(engine, find_experiment(engine, config.experiments, name))
        if name == "ui-ab":
            assert sum(s.lists for s in rep.variants) == 20 and sum(s.clicks for s in rep.variants) == 14
        for s in rep.variants:
            row = re.search(rf'<tr data-variant="{s.name}">(.*?)</tr>', html, re.S)
            assert row is not None, html
            cells = re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row.group(1), re.S)
            assert cells[:6] == [s.name, str(s.lists), str(s.clicks), str(s.clicked_lists), pages.number(s.ctr),
                                 pages.interval(s.ctr_ci)]
        if name == "ui-il":
            il = rep.interleaving
            assert il is not None and il.lists == 20
            assert f'<td class="p">{pages.number(il.p_value)}</td>' in html
            assert f"<td>{pages.interval(il.share_ci)}</td>" in html
        else:
            assert f"p = {pages.number(rep.p_value)}" in html
        plot = client.get(f"/ui/experiments/{name}/report.png")
        assert plot.status_code == 200 and plot.mimetype == "image/png" and plot.data[:4] == b"\x89PNG"
    missing = client.get("/ui/experiments/%3Cscript%3Ex")
    assert missing.status_code == 404 and b"<script>x" not in missing.data and b"unknown experiment" in missing.data

    # a keyless page reads only the newest `impressions.page_max_lists` lists, and says so
    from recsys.experiments.report import count_lists, read_outcomes

    newest, _ = read_outcomes(engine, "ui-ab", max_lists=5)
    everything, _ = read_outcomes(engine, "ui-ab")
    assert [o.request_id for o in newest] == [o.request_id for o in everything][-5:] and count_lists(engine, "ui-ab") == 20
    assert newest == everything[-5:]
    full = app.extensions["recsys.config"]
    capped = full.model_copy(update={"impressions": full.impressions.model_copy(update={"page_max_lists": 5})})
    app.extensions["recsys.config"] = capped
    app.extensions.pop("recsys.ui.aggregates", None)
    try:
        html = client.get("/ui/experiments/ui-ab").get_data(as_text=True)
    finally:
        app.extensions["recsys.config"] = full
    assert "over the newest\n  5 of the 20 lists logged" in html
    row = re.search(r'<tr data-variant="hyb">(.*?)</tr>', html, re.S)
    lists_pop = re.search(r'<tr data-variant="pop">(.*?)</tr>', html, re.S)
    assert row and lists_pop
    shown = [int(re.findall(r"<td>([\d,]+)</td>", r.group(1))[0]) for r in (row, lists_pop)]
    assert sum(shown) == 5


# ------------------------------------------------------------------------------------------------ media
def test_media_serves_a_cached_thumbnail_with_cache_headers(shop: dict[str, Any]) -> None:
    client, config = shop["client"], shop["config"]
    res = client.get("/media/items/D0002?size=160")
    assert res.status_code == 200 and res.mimetype == "image/jpeg"
    assert "max-age=" in res.headers["Cache-Control"] and res.headers["ETag"]
    img = Image.open(io.BytesIO(res.data))
    assert max(img.size) == 160
    cached = list((config.data_dir / "cache" / "thumbs").rglob("*.jpg"))
    assert any(p.read_bytes() == res.data for p in cached)
    again = client.get("/media/items/D0002?size=160", headers={"If-None-Match": res.headers["ETag"]})
    assert again.status_code == 304
    big = client.get("/media/items/D0002?size=640")
    assert max(Image.open(io.BytesIO(big.data)).size) == 160  # never enlarged past the 160 px original
    assert big.headers["ETag"] != res.headers["ETag"]


def test_media_thumbnail_with_a_relative_data_dir(shop: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """``make demo`` runs with ``data_dir: .recsys`` (relative): the thumbnail written there must be the one sent."""
    from services.app import create_app

    cfg: Config = shop["config"]
    monkeypatch.chdir(cfg.data_dir.parent)
    relative = cfg.model_copy(update={"data_dir": Path(cfg.data_dir.name)})
    client = create_app(relative, shop["rt"]).test_client()
    res = client.get("/media/items/D0003?size=96")
    assert res.status_code == 200 and res.mimetype == "image/jpeg"


@pytest.mark.parametrize("item_id", ["X-none", "X-broken", "X-escape", "X-dotdot", "X-remote"])
def test_media_placeholder(shop: dict[str, Any], item_id: str) -> None:
    """No picture, not an image, a symlink out of the roots, a ``..`` path, a URL (never fetched): the placeholder."""
    from recsys.serving.browse import item_image_ref

    found, ref = item_image_ref(shop["engine"], item_id)
    assert found and (item_id != "X-none" or not ref)
    res = shop["client"].get(f"/media/items/{item_id}?size=96")
    assert res.status_code == 200 and res.mimetype == "image/svg+xml" and b"no picture" in res.data
    assert "max-age=300" in res.headers["Cache-Control"]


@pytest.mark.parametrize(("url", "status"), [
    ("/media/items/no-such-item", 404), ("/media/items/..%2F..%2Fetc%2Fpasswd", 404), ("/media/items/%2Fetc%2Fpasswd", 404),
    ("/media/items/D0002?size=100", 400), ("/media/items/D0002?size=-1", 400), ("/media/items/D0002?size=1e9", 400),
    ("/media/items/D0002?path=/etc/passwd", 200),  # unknown parameters change nothing
])
def test_media_paths_from_the_request_are_never_opened(shop: dict[str, Any], url: str, status: int) -> None:
    res = shop["client"].get(url)
    assert res.status_code == status
    assert b"root:" not in res.data


def test_media_sources_lie_inside_the_roots(tmp_path: Path) -> None:
    from recsys.serving.media import local_source

    root = tmp_path / "data" / "images"
    root.mkdir(parents=True)
    inside = root / "a.jpg"
    inside.write_bytes(b"x")
    outside = tmp_path / "b.jpg"
    outside.write_bytes(b"x")
    (root / "link.jpg").symlink_to(outside)
    roots = [root]
    assert local_source(str(inside), roots) == inside.resolve()
    assert local_source(str(root / "link.jpg"), roots) is None
    assert local_source(str(root / ".." / ".." / "b.jpg"), roots) is None
    assert local_source(str(outside), roots) is None
    assert local_source(str(root / "missing.jpg"), roots) is None
    assert local_source(str(root), roots) is None  # a folder is not a picture


# ------------------------------------------------------------------------------------------------ policy
def test_playground_is_off_when_reads_need_a_key(shop: dict[str, Any]) -> None:
    from services.app import create_app

    cfg: Config = shop["config"]
    locked = cfg.model_copy(update={"service": cfg.service.model_copy(update={"read_requires_key": True})})
    client = create_app(locked, shop["rt"]).test_client()
    assert client.get("/ui/search").status_code == 403
    assert client.get("/media/items/D0002").status_code == 403


def test_database_outage_is_a_503_page(shop: dict[str, Any], tmp_path: Path) -> None:
    from services.app import create_app

    rt = copy.copy(shop["rt"])
    rt.engine = make_engine(f"sqlite:///{tmp_path / 'gone' / 'nowhere' / 'x.sqlite'}")
    client = create_app(shop["config"], rt).test_client()
    for url in ("/ui/items/D0002", "/ui/overview", "/ui/users/U0001"):
        res = client.get(url)
        assert res.status_code == 503 and res.mimetype == "text/html", (url, res.status_code)


def test_demo_prints_the_playground_command(tmp_path: Path) -> None:
    from recsys.cli.demo import playground_lines
    from recsys.config import load_config

    lines = playground_lines(load_config(None, env={"RECSYS_DATA_DIR": str(tmp_path)}), None)
    text = "\n".join(lines)
    assert f"RECSYS_DATA_DIR={tmp_path.resolve()}" in text and " serve" in text
    assert "http://127.0.0.1:8000/ui/" in text and "RECSYS_SERVICE_API_KEYS='[demo-key]'" in text
