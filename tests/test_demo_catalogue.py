"""The demo shop generator: files, pictures, wording, event log and the taste signal in it."""

from __future__ import annotations

import csv
import datetime as dt
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recsys.demo.catalogue import (
    CATEGORIES,
    COLOURS,
    EVENT_TYPES,
    SHAPES,
    SPAN_DAYS,
    START,
    DemoFiles,
    DemoShop,
    build_shop,
    generate_demo,
)
from recsys.demo.drawing import PATTERNS, SILHOUETTES

ITEM_COLUMNS = ["item_id", "title", "description", "category", "colour", "shape", "price", "available", "image"]
EVENT_COLUMNS = ["event_id", "user_id", "item_id", "event_type", "timestamp", "value"]
SHAPE_WORDS = {"circle": "circle", "square": "square", "triangle": "triangle", "star": "star", "heart": "heart",
               "stripes": "stripe", "dots": "dot", "zigzag": "zigzag"}


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoFiles, float]:
    """The default demo, written once, with the CPU seconds it took."""
    out = tmp_path_factory.mktemp("demo")
    t0 = time.process_time()
    files = generate_demo(out)
    return files, time.process_time() - t0


@pytest.fixture(scope="module")
def shop() -> DemoShop:
    return build_shop()


def test_runtime_is_small(demo: tuple[DemoFiles, float]) -> None:
    assert demo[1] < 5.0, f"generate_demo took {demo[1]:.2f} CPU s for the defaults"


def test_files_schema_and_counts(demo: tuple[DemoFiles, float]) -> None:
    files, _ = demo
    assert (files.n_items, files.n_users) == (300, 200)
    header, items = _read(files.items_csv)
    assert header == ITEM_COLUMNS and len(items) == files.n_items
    header, users = _read(files.users_csv)
    assert header == ["user_id", "segment"] and len(users) == files.n_users
    header, events = _read(files.events_csv)
    assert header == EVENT_COLUMNS and len(events) == files.n_events > 3000

    assert len({r["item_id"] for r in items}) == len(items)
    assert len({r["user_id"] for r in users}) == len(users)
    assert all(r["available"] in ("true", "false") for r in items)
    unavailable = sum(r["available"] == "false" for r in items)
    no_image = sum(r["image"] == "" for r in items)
    assert 1 <= unavailable <= 0.08 * len(items)
    assert 1 <= no_image <= 0.06 * len(items)
    assert files.n_images == len(items) - no_image
    assert {p.name for p in files.images_dir.iterdir()} == {Path(r["image"]).name for r in items if r["image"]}


def test_files_hold_exactly_the_shop(demo: tuple[DemoFiles, float], shop: DemoShop) -> None:
    files, _ = demo
    _, items = _read(files.items_csv)
    _, events = _read(files.events_csv)
    assert [(r["item_id"], r["title"], r["colour"]) for r in items] == [
        (i.item_id, i.title, i.colour) for i in shop.items
    ]
    assert [(r["event_id"], r["user_id"], r["item_id"], r["event_type"]) for r in events] == [
        (e.event_id, e.user_id, e.item_id, e.event_type) for e in shop.events
    ]


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = generate_demo(tmp_path / "a", n_items=40, n_users=30, seed=7)
    b = generate_demo(tmp_path / "b", n_items=40, n_users=30, seed=7)
    c = generate_demo(tmp_path / "c", n_items=40, n_users=30, seed=8)
    names = sorted(p.relative_to(a.out_dir) for p in a.out_dir.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(b.out_dir) for p in b.out_dir.rglob("*") if p.is_file())
    for name in names:
        assert (a.out_dir / name).read_bytes() == (b.out_dir / name).read_bytes(), name
    assert a.events_csv.read_bytes() != c.events_csv.read_bytes()
    assert a.items_csv.read_bytes() != c.items_csv.read_bytes()


def test_catalogue_does_not_depend_on_the_number_of_users() -> None:
    assert build_shop(50, 10, seed=3).items == build_shop(50, 40, seed=3).items


def test_images_open_as_rgb_of_the_stated_size_and_show_the_colour(demo: tuple[DemoFiles, float]) -> None:
    files, _ = demo
    _, items = _read(files.items_csv)
    for row in items:
        if not row["image"]:
            continue
        path = files.items_csv.parent / row["image"]
        assert path.is_file(), path
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (160, 160)
            pixels = np.asarray(im, dtype=np.float32).reshape(-1, 3)
        if row["colour"] != "white":  # the light background is close to white
            near = np.linalg.norm(pixels - np.array(COLOURS[row["colour"]]), axis=1) < 45
            assert near.mean() > 0.12, (row["item_id"], row["colour"], float(near.mean()))


def test_image_size_is_configurable(tmp_path: Path) -> None:
    files = generate_demo(tmp_path, n_items=5, n_users=3, image_size=128)
    with Image.open(next(files.images_dir.iterdir())) as im:
        assert im.size == (128, 128)


def test_titles_and_descriptions_agree_with_the_item(demo: tuple[DemoFiles, float]) -> None:
    _, items = _read(demo[0].items_csv)
    for row in items:
        noun = row["category"].lower()
        for text in (row["title"].lower(), row["description"].lower()):
            assert row["colour"] in text and noun in text and SHAPE_WORDS[row["shape"]] in text, row
        others = [c for c in COLOURS if c != row["colour"]]
        assert not any(c in row["title"].lower().split() for c in others), row["title"]
        lo, hi = CATEGORIES[row["category"]].price
        assert lo - 1 <= float(row["price"]) <= hi, row
    assert len({r["title"].split()[0] for r in items}) >= 10  # varied wording, not one template
    assert len({r["description"] for r in items}) == len(items)


def test_events_reference_known_rows_and_are_ordered(demo: tuple[DemoFiles, float]) -> None:
    files, _ = demo
    _, items = _read(files.items_csv)
    _, users = _read(files.users_csv)
    _, events = _read(files.events_csv)
    item_ids, user_ids = {r["item_id"] for r in items}, {r["user_id"] for r in users}
    assert len({e["event_id"] for e in events}) == len(events)
    last: dict[str, dt.datetime] = {}
    previous = START
    end = START + dt.timedelta(days=SPAN_DAYS + 1)
    for e in events:
        assert e["user_id"] in user_ids and e["item_id"] in item_ids, e
        assert e["event_type"] in EVENT_TYPES and e["value"] == "", e
        assert e["timestamp"].endswith("Z")
        ts = dt.datetime.fromisoformat(e["timestamp"])
        assert ts.utcoffset() == dt.timedelta(0) and START <= ts < end
        assert ts >= previous  # the file is in time order
        assert e["user_id"] not in last or ts > last[e["user_id"]], e  # strictly increasing per user
        previous = last[e["user_id"]] = ts


def test_funnel_cold_users_and_cold_items(demo: tuple[DemoFiles, float]) -> None:
    files, _ = demo
    _, events = _read(files.events_csv)
    kinds = Counter(e["event_type"] for e in events)
    assert kinds["view"] > kinds["click"] > kinds["add_to_cart"] > kinds["purchase"] > 0
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    for e in events:  # each funnel step follows the previous one for the same user and item
        step = EVENT_TYPES.index(e["event_type"])
        if step:
            assert EVENT_TYPES[step - 1] in seen[e["user_id"], e["item_id"]], e
        seen[e["user_id"], e["item_id"]].add(e["event_type"])
    per_user = Counter(e["user_id"] for e in events)
    assert len(per_user) == files.n_users  # everybody did something
    assert sum(n <= 2 for n in per_user.values()) >= 3
    assert files.n_items - len({e["item_id"] for e in events}) >= 3
    top = Counter(e["item_id"] for e in events).most_common()
    assert top[0][1] > 5 * len(events) / files.n_items  # popularity skew


def _taste_rates(shop: DemoShop, events: list[tuple[str, str]]) -> tuple[float, float, float, float]:
    """For ``(user_id, item_id)`` pairs: share matching the user's favourite colour, the chance of
    that for a uniformly random item, and the same two for favourite categories."""
    items = {i.item_id: i for i in shop.items}
    users = {u.user_id: u for u in shop.users}
    colour_share = {c: np.mean([i.colour == c for i in shop.items]) for c in COLOURS}
    category_share = {c: np.mean([i.category == c for i in shop.items]) for c in CATEGORIES}
    colour_hit = np.mean([items[i].colour in users[u].favourite_colours for u, i in events])
    colour_chance = np.mean([sum(colour_share[c] for c in users[u].favourite_colours) for u, _ in events])
    cat_hit = np.mean([items[i].category in users[u].favourite_categories for u, i in events])
    cat_chance = np.mean([sum(category_share[c] for c in users[u].favourite_categories) for u, _ in events])
    return float(colour_hit), float(colour_chance), float(cat_hit), float(cat_chance)


def test_purchases_follow_the_users_tastes(shop: DemoShop) -> None:
    purchases = [(e.user_id, e.item_id) for e in shop.events if e.event_type == "purchase"]
    assert len(purchases) >= 200
    colour_hit, colour_chance, cat_hit, cat_chance = _taste_rates(shop, purchases)
    assert colour_hit > 0.5 and colour_hit > 2.5 * colour_chance
    assert cat_hit > 0.5 and cat_hit > 2.0 * cat_chance
    # The same statistic on purchases of random items stays at chance: the check above can fail.
    rng = np.random.default_rng(0)
    random_items = [shop.items[int(k)].item_id for k in rng.integers(len(shop.items), size=len(purchases))]
    colour_hit, colour_chance, cat_hit, cat_chance = _taste_rates(
        shop, [(u, i) for (u, _), i in zip(purchases, random_items, strict=True)]
    )
    assert colour_hit < 1.5 * colour_chance and cat_hit < 1.5 * cat_chance


def test_funnel_sharpens_the_taste_signal(shop: DemoShop) -> None:
    by_kind = {k: [(e.user_id, e.item_id) for e in shop.events if e.event_type == k] for k in EVENT_TYPES}
    view_hit = _taste_rates(shop, by_kind["view"])[0]
    purchase_hit = _taste_rates(shop, by_kind["purchase"])[0]
    assert purchase_hit > view_hit + 0.1


def test_users_csv_keeps_tastes_hidden(demo: tuple[DemoFiles, float], shop: DemoShop) -> None:
    _, users = _read(demo[0].users_csv)
    assert [(r["user_id"], r["segment"]) for r in users] == [(u.user_id, u.segment) for u in shop.users]
    assert {u.segment for u in shop.users} == {"home", "apparel", "stationery", "eclectic"}


def test_every_category_and_shape_can_be_drawn() -> None:
    assert set(CATEGORIES) == set(SILHOUETTES)
    assert set(SHAPES) == set(PATTERNS)


@pytest.mark.parametrize(
    "kwargs", [{"n_items": 0}, {"n_users": 0}, {"image_size": 8}], ids=["no-items", "no-users", "tiny-images"]
)
def test_bad_arguments_are_refused(tmp_path: Path, kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be"):
        generate_demo(tmp_path, **kwargs)
    assert not (tmp_path / "items.csv").exists()
