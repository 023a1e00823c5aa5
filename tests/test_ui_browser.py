"""The playground in a real browser: Playwright for Python driving Debian's Chromium (``/usr/bin/chromium``).

A live server (werkzeug, 127.0.0.1, a free port) serves the app on a fresh SQLite file holding the demo
shop embedded with the offline default encoders (as ``recsys demo`` does). Every page a test opens fails
the test on a console error, an uncaught script error, a failed request or an HTTP error answer.
Screenshots go to ``$RECSYS_UI_ARTIFACTS`` (default: the test's temporary folder, ``artifacts/``).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ui_shop import KEY, build_ui_shop

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("RECSYS_CHROMIUM", "/usr/bin/chromium")
if shutil.which(CHROMIUM) is None:
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from werkzeug.serving import make_server

    from recsys.serving import Runtime
    from recsys.store.db import make_engine
    from services.app import create_app

    root = tmp_path_factory.mktemp("ui-browser")
    config = build_ui_shop(root)
    engine = make_engine(config.database_url)
    rt = Runtime(config, engine)
    rt.reload()
    app = create_app(config, rt)
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{srv.server_port}", "config": config, "engine": engine, "app": app,
           "images": config.data_dir / "demo" / "images"}
    srv.shutdown()
    thread.join(10)
    srv.server_close()
    engine.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--disable-gpu", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = Path(os.environ.get("RECSYS_UI_ARTIFACTS") or tmp_path_factory.mktemp("artifacts"))
    out.mkdir(parents=True, exist_ok=True)
    return out


class Watch:
    """Everything that went wrong in a page: console errors, script errors, failed requests, HTTP >= 400."""

    def __init__(self, page: Any) -> None:
        self.problems: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))
        page.on("requestfailed", lambda r: self.problems.append(f"requestfailed: {r.url} {r.failure}"))
        page.on("response", lambda r: r.status >= 400 and self.problems.append(f"HTTP {r.status}: {r.url}"))


@pytest.fixture
def page(browser: Any, server: dict[str, Any]) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=server["url"])
    pg = ctx.new_page()
    watch = Watch(pg)
    yield pg
    pg.wait_for_load_state("networkidle")  # what the test's last step started has finished
    problems = list(watch.problems)
    ctx.close()
    assert not problems, "\n".join(problems)


def _pictures_loaded(page: Any, selector: str) -> int:
    """Number of pictures under ``selector``, after checking each one loaded and has alt text."""
    imgs = page.locator(f"{selector} img")
    n = imgs.count()
    for i in range(n):
        img = imgs.nth(i)
        img.scroll_into_view_if_needed()
        page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=img.element_handle())
        assert img.get_attribute("alt"), f"picture {i} under {selector} has no alt text"
    return n


def _wait_for_preview(page: Any) -> None:
    """The chosen picture is previewed: shown and decoded (a blob URL loads asynchronously, and an image
    not decoded yet has no size, so checking visibility at once raced with the decode)."""
    page.wait_for_function(
        "() => { const p = document.getElementById('preview');"
        " return !p.hidden && p.complete && p.naturalWidth > 0 && p.getBoundingClientRect().width > 0; }",
        timeout=5_000)


def _tile_ids(page: Any, selector: str) -> list[str]:
    return page.eval_on_selector_all(f"{selector} [data-item-id]", "els => els.map(e => e.dataset.itemId)")


def test_text_search_shows_pictures(page: Any, artifacts: Path) -> None:
    page.goto("/ui/search")
    page.get_by_label("Words").fill("red star mug")
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_selector("#results .tile")
    assert _pictures_loaded(page, "#results") >= 10
    titles = page.locator("#results .tile .title").all_inner_texts()
    assert any("star" in t.lower() for t in titles[:5]), titles[:5]
    assert page.locator("#results .reasons").first.inner_text().strip()
    assert page.locator("#results .price").count() > 0
    page.screenshot(path=str(artifacts / "search-text.png"), full_page=True)


def test_item_page_shows_similar_items_with_pictures(page: Any, artifacts: Path) -> None:
    page.goto("/ui/search")
    page.get_by_label("Words").fill("tote bag")
    page.keyboard.press("Enter")  # the form submits from the keyboard
    page.wait_for_selector("#results .tile")
    _pictures_loaded(page, "#results")  # before leaving the page (a navigation aborts pictures still loading)
    first = page.locator("#results .tile-link").first
    title = first.locator(".title").inner_text()
    first.click()
    page.wait_for_selector("#similar .tile")
    assert page.locator("h1").inner_text() == title
    assert _pictures_loaded(page, ".item-photo") == 1
    assert _pictures_loaded(page, "#similar") >= 5
    split = page.locator("#similar .split").first.inner_text()
    assert "content" in split and "co-interaction" in split
    assert page.locator(".people a").count() > 0  # users who interacted with it
    page.screenshot(path=str(artifacts / "item.png"), full_page=True)


def test_buy_on_the_feed_changes_it(page: Any, server: dict[str, Any], artifacts: Path) -> None:
    page.goto("/ui/users/U0003")
    page.wait_for_selector("#feed .tile")
    assert _pictures_loaded(page, "#history") > 0
    assert page.locator("#feed button.post-event").first.is_hidden()  # read-only without a key
    before = _tile_ids(page, "#feed")
    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Save").click()
    buy = page.locator("#feed .tile").first.get_by_role("button", name="buy")
    buy.wait_for(state="visible", timeout=5_000)  # shown by the Save handler
    bought = before[0]
    buy.click()
    page.wait_for_function("() => document.getElementById('event-status').textContent.startsWith('Recorded')")
    after = _tile_ids(page, "#feed")
    assert bought not in after and after != before  # the purchase is folded in: seen items leave the feed
    assert page.locator("#feed .tile.new").count() >= 1
    assert _pictures_loaded(page, "#feed") == len(after)
    assert _tile_ids(page, "#history")[0] == bought  # the history strip was refreshed too, newest first
    assert _pictures_loaded(page, "#history") > 0
    page.evaluate("() => { window.scrollTo(0, 0); document.getElementById('history').scrollLeft = 0; }")
    page.screenshot(path=str(artifacts / "user-after-buy.png"), full_page=True)
    page.reload()
    assert _tile_ids(page, "#history")[0] == bought


def test_picture_search_by_file_picker_and_by_drop(page: Any, server: dict[str, Any], artifacts: Path) -> None:
    picture = server["images"] / "D0005.jpg"
    page.goto("/ui/search")
    page.set_input_files("#image", str(picture))
    _wait_for_preview(page)
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_selector("#results .tile")
    assert _pictures_loaded(page, "#results") >= 10
    assert "D0005.jpg" in page.locator("#results-heading").inner_text()

    page.goto("/ui/search")
    data = picture.read_bytes()
    transfer = page.evaluate_handle(
        """bytes => { const dt = new DataTransfer();
                      dt.items.add(new File([new Uint8Array(bytes)], 'dropped.jpg', {type: 'image/jpeg'}));
                      return dt; }""", list(data))
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    _wait_for_preview(page)
    page.get_by_label("Words").fill("mug")  # text and picture together
    page.get_by_role("button", name="Search", exact=True).click()
    page.wait_for_selector("#results .tile")
    assert "dropped.jpg" in page.locator("#results-heading").inner_text()
    assert _pictures_loaded(page, "#results") >= 10
    page.screenshot(path=str(artifacts / "search-picture.png"), full_page=True)


def test_overview_shows_counts_versions_and_failures(page: Any, artifacts: Path) -> None:
    page.goto("/ui/overview")
    assert page.locator("#coverage tbody tr").count() == 2  # text and image spaces
    assert page.locator("#failures").inner_text().count("X-broken") == 1  # the picture that is not an image
    cards = page.locator(".card h3").all_inner_texts()
    assert any(c.startswith("feed") for c in cards) and any(c.startswith("align") for c in cards)
    page.screenshot(path=str(artifacts / "overview.png"), full_page=True)


def test_experiment_report_page(page: Any, server: dict[str, Any], artifacts: Path) -> None:
    """An interleaving experiment served over HTTP, clicks posted with the request ids: the page lists it and
    its report shows the lists, the wins and the plot."""
    import requests

    from recsys.experiments.report import experiment_report
    from recsys.experiments.settings import ExperimentConfig
    from recsys.experiments.store import save_experiment

    engine, config, app = server["engine"], server["config"], server["app"]
    exp = ExperimentConfig.model_validate({"name": "browser-il", "mode": "interleave", "variants": [
        {"name": "hybrid"}, {"name": "popular", "ranker": "popularity"}]})
    save_experiment(engine, exp, config.experiments)
    app.extensions["recsys.experiments"].refresh_s = 0.0
    clicks = []
    for u in range(1, 13):
        got = requests.get(f"{server['url']}/v1/users/U{u:04d}/recommendations?k=6", timeout=30).json()
        assert got["variant"] == "interleaved"
        clicks.append({"user_id": f"U{u:04d}", "item_id": got["items"][u % 3]["id"], "event_type": "click",
                       "request_id": got["request_id"], "position": u % 3})
    assert requests.post(f"{server['url']}/v1/events", json={"events": clicks}, headers={"X-API-Key": KEY},
                         timeout=30).status_code == 200
    save_experiment(engine, exp.model_copy(update={"active": False}), config.experiments, replace=True)
    assert app.extensions["recsys.impressions"].flush(10)
    app.extensions.pop("recsys.ui.aggregates", None)
    rep = experiment_report(engine, exp)
    page.goto("/ui/search")
    page.get_by_role("link", name="Experiments").click()
    page.get_by_role("link", name="browser-il").click()
    page.wait_for_selector("#interleaving")
    cells = page.locator("#interleaving tbody td").all_inner_texts()
    assert rep.interleaving is not None and cells[0] == "12" == str(rep.interleaving.lists)
    assert cells[1:4] == [str(rep.interleaving.wins.get("hybrid", 0)), str(rep.interleaving.wins.get("popular", 0)),
                          str(rep.interleaving.ties)]
    assert page.locator("#report tbody tr").count() == 2
    plot = page.locator("figure img.plot")
    page.wait_for_function("el => el.complete && el.naturalWidth > 300", arg=plot.element_handle())
    page.screenshot(path=str(artifacts / "experiment-report.png"), full_page=True)


@pytest.mark.parametrize("path", ["/ui/search?q=star", "/ui/items/D0002", "/ui/users/U0001", "/ui/overview"])
def test_phone_width(browser: Any, server: dict[str, Any], artifacts: Path, path: str) -> None:
    ctx = browser.new_context(viewport={"width": 375, "height": 740}, base_url=server["url"], is_mobile=True)
    pg = ctx.new_page()
    watch = Watch(pg)
    pg.goto(path)
    overflow = pg.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{path}: {overflow} px wider than the phone"
    columns = pg.evaluate("""() => { const g = document.querySelector('.grid');
        return g ? getComputedStyle(g).gridTemplateColumns.split(' ').length : 0; }""")
    assert columns <= 2
    assert pg.eval_on_selector_all("img", "els => els.filter(e => !e.alt).length") == 0
    pg.screenshot(path=str(artifacts / f"phone-{path.strip('/').replace('/', '-').split('?')[0]}.png"))
    pg.wait_for_load_state("networkidle")
    problems = list(watch.problems)
    ctx.close()
    assert not problems, "\n".join(problems)


def test_keyboard_reaches_the_search_box(page: Any) -> None:
    page.goto("/ui/search")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.className") == "skip"
    page.keyboard.press("Enter")  # skip link -> main
    for _ in range(6):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.id") == "q":
            break
    assert page.evaluate("() => document.activeElement.id") == "q"
    page.keyboard.type("star")
    page.keyboard.press("Enter")
    page.wait_for_selector("#results .tile")
