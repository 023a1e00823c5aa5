"""A small synthetic shop: items with pictures, users with hidden tastes, and their event log.

``build_shop`` is the pure core (plain dataclasses, no IO); ``generate_demo`` writes it as the files
that ``recsys ingest`` reads:

- ``items.csv``: ``item_id,title,description,category,colour,shape,price,available,image``
  (``available`` is ``true``/``false``; ``image`` is ``images/<item_id>.jpg`` relative to the CSV, or
  empty for the few items without a picture);
- ``users.csv``: ``user_id,segment``;
- ``events.csv``: ``event_id,user_id,item_id,event_type,timestamp,value`` (``event_type`` one of
  ``view``/``click``/``add_to_cart``/``purchase``; ``timestamp`` ISO 8601 UTC such as
  ``2024-01-01T09:30:00Z``, strictly increasing per user; ``value`` empty); rows are in time order.

Every item is a product of one category in one colour with one printed shape, and its title,
description and picture all say so. Each user has one or two favourite colours and categories and a
favourite shape; views follow those tastes, popularity and a little noise, and the funnel
(view > click > add_to_cart > purchase) filters further by taste, so both collaborative filtering and
content models have real signal. A few users have only one or two events, and a few items none.
Everything is a deterministic function of the seed.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.demo.drawing import RGB, render_product

COLOURS: dict[str, RGB] = {
    "red": (210, 40, 40),
    "blue": (40, 80, 200),
    "green": (40, 150, 60),
    "yellow": (245, 210, 40),
    "black": (25, 25, 28),
    "white": (246, 246, 244),
    "purple": (130, 60, 170),
    "orange": (245, 130, 30),
    "pink": (240, 130, 180),
    "grey": (128, 128, 132),
}


@dataclass(frozen=True)
class _Category:
    noun: str
    price: tuple[float, float]
    materials: tuple[str, ...]
    details: tuple[str, ...]


CATEGORIES: dict[str, _Category] = {
    "mug": _Category("mug", (8, 18), ("ceramic", "stoneware", "porcelain", "enamel"),
                     ("Holds 350 ml of coffee or tea.", "Dishwasher and microwave safe.",
                      "A generous 11 oz size with a comfortable handle.")),
    "t-shirt": _Category("T-shirt", (15, 35), ("cotton", "organic cotton", "soft jersey", "heavyweight cotton"),
                         ("Unisex regular fit, sizes S to XXL.", "Crew neck with short sleeves.",
                          "Pre-shrunk and machine washable.")),
    "poster": _Category("poster", (10, 40), ("matte paper", "glossy paper", "recycled paper"),
                        ("Printed on 200 gsm stock, A3 size.", "Ships rolled in a sturdy tube.",
                         "Frame not included.")),
    "cap": _Category("cap", (12, 28), ("cotton twill", "washed cotton", "canvas"),
                     ("Adjustable strap at the back.", "Curved brim and six panels.",
                      "One size fits most.")),
    "tote bag": _Category("tote bag", (10, 25), ("canvas", "recycled cotton", "heavy canvas"),
                          ("Long handles to carry it on the shoulder.", "Roomy enough for a laptop and groceries.",
                           "Reinforced stitching at the handles.")),
    "sticker": _Category("sticker", (2, 6), ("vinyl", "matte vinyl", "glossy vinyl"),
                         ("Waterproof and weather resistant.", "About 7 cm across.",
                          "Sticks to laptops, bottles and notebooks.")),
    "cushion": _Category("cushion", (18, 45), ("linen", "velvet", "cotton canvas"),
                         ("Removable cover with a hidden zip.", "45 x 45 cm, insert included.",
                          "Soft and plump for the sofa or bed.")),
    "notebook": _Category("notebook", (6, 15), ("spiral-bound", "hardcover", "softcover"),
                          ("A5 size with 120 dotted pages.", "Lies flat when open.",
                           "Acid-free paper that takes ink well.")),
}


@dataclass(frozen=True)
class _Shape:
    adjective: str
    """As in "<colour> <adjective> <noun>": "star", "striped", "polka-dot"."""
    with_phrase: str
    """As in "<noun> with <with_phrase>": "a star", "stripes"."""
    motif: str
    """As in "a printed <motif> pattern"."""


SHAPES: dict[str, _Shape] = {
    "circle": _Shape("circle", "a circle", "circle"),
    "square": _Shape("square", "a square", "square"),
    "triangle": _Shape("triangle", "a triangle", "triangle"),
    "star": _Shape("star", "a star", "star"),
    "heart": _Shape("heart", "a heart", "heart"),
    "stripes": _Shape("striped", "stripes", "stripe"),
    "dots": _Shape("polka-dot", "polka dots", "polka-dot"),
    "zigzag": _Shape("zigzag", "a zigzag", "zigzag"),
}

SEGMENTS: dict[str, tuple[str, ...]] = {
    "home": ("mug", "cushion", "poster"),
    "apparel": ("t-shirt", "cap", "tote bag"),
    "stationery": ("notebook", "sticker", "poster"),
    "eclectic": tuple(CATEGORIES),
}
"""Segment -> the categories its users' favourites are drawn from."""

EVENT_TYPES = ("view", "click", "add_to_cart", "purchase")
START = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
SPAN_DAYS = 60

_STYLES = ("Classic", "Everyday", "Bold", "Minimal", "Retro", "Studio", "Signature", "Simple")
_TONES = ("{c}", "{c}", "a bright {c}", "a deep {c}", "a soft {c}")
_PRINTS = ("a printed {m} pattern", "a bold {m} motif", "a {m} print", "a large printed {m} design")
_CLOSERS = ("Makes a thoughtful gift.", "Printed to order in small batches.", "Part of our {m} collection.",
            "Designed in our studio.", "", "")


@dataclass(frozen=True)
class DemoItem:
    item_id: str
    title: str
    description: str
    category: str
    colour: str
    shape: str
    price: float
    available: bool
    has_image: bool


@dataclass(frozen=True)
class DemoUser:
    """A user and the hidden tastes their events were drawn from (not written to ``users.csv``)."""

    user_id: str
    segment: str
    favourite_colours: tuple[str, ...]
    favourite_categories: tuple[str, ...]
    favourite_shape: str


@dataclass(frozen=True)
class DemoEvent:
    event_id: str
    user_id: str
    item_id: str
    event_type: str
    timestamp: int
    """Unix seconds, UTC."""


@dataclass(frozen=True)
class DemoShop:
    items: tuple[DemoItem, ...]
    users: tuple[DemoUser, ...]
    events: tuple[DemoEvent, ...]
    """In time order."""


@dataclass(frozen=True)
class DemoFiles:
    """What ``generate_demo`` wrote. Image paths in ``items.csv`` are relative to ``out_dir``."""

    out_dir: Path
    items_csv: Path
    users_csv: Path
    events_csv: Path
    images_dir: Path
    n_items: int
    n_users: int
    n_events: int
    n_images: int


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _describe(category: str, colour: str, shape: str, rng: np.random.Generator) -> tuple[str, str]:
    """Title and description that name the item's colour, category and shape, with varied wording."""
    cat, shp = CATEGORIES[category], SHAPES[shape]
    form = int(rng.integers(3))
    if form == 0:
        title = f"{colour} {shp.adjective} {cat.noun}"
    elif form == 1:
        title = f"{shp.adjective} {cat.noun} in {colour}"
    else:
        title = f"{_pick(rng, _STYLES)} {colour} {cat.noun} with {shp.with_phrase}"
    title = title[0].upper() + title[1:]
    tone = _pick(rng, _TONES).format(c=colour)
    printed = _pick(rng, _PRINTS).format(m=shp.motif)
    details = rng.choice(len(cat.details), size=int(rng.integers(1, 3)), replace=False)
    sentences = [f"A {_pick(rng, cat.materials)} {cat.noun} in {tone} with {printed}."]
    sentences += [cat.details[int(k)] for k in sorted(details)]
    sentences.append(_pick(rng, _CLOSERS).format(m=shp.motif))
    return title, " ".join(s for s in sentences if s)


def _build_items(n_items: int, rng: np.random.Generator) -> tuple[DemoItem, ...]:
    width = max(4, len(str(n_items)))
    items = []
    for k in range(n_items):
        category, colour, shape = _pick(rng, list(CATEGORIES)), _pick(rng, list(COLOURS)), _pick(rng, list(SHAPES))
        title, description = _describe(category, colour, shape, rng)
        lo, hi = CATEGORIES[category].price
        price = round(float(rng.uniform(lo, hi))) - 0.01
        items.append(DemoItem(
            item_id=f"D{k + 1:0{width}d}", title=title, description=description, category=category,
            colour=colour, shape=shape, price=max(price, 0.99), available=bool(rng.random() >= 0.03),
            has_image=bool(rng.random() >= 0.02),
        ))
    return tuple(items)


def _build_users(n_users: int, rng: np.random.Generator) -> tuple[DemoUser, ...]:
    width = max(4, len(str(n_users)))
    users = []
    for k in range(n_users):
        segment = _pick(rng, list(SEGMENTS))
        pool = SEGMENTS[segment]
        n_cat, n_col = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        cats = tuple(pool[int(i)] for i in sorted(rng.choice(len(pool), size=n_cat, replace=False)))
        cols = tuple(list(COLOURS)[int(i)] for i in sorted(rng.choice(len(COLOURS), size=n_col, replace=False)))
        users.append(DemoUser(f"U{k + 1:0{width}d}", segment, cols, cats, _pick(rng, list(SHAPES))))
    return tuple(users)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(logits: np.ndarray) -> np.ndarray:
    p = np.exp(logits - logits.max())
    return p / p.sum()


def _user_events(
    user: DemoUser, items: tuple[DemoItem, ...], log_pop: np.ndarray, cold: bool, rng: np.random.Generator
) -> list[tuple[int, int, str]]:
    """One user's events as ``(timestamp, item row, event_type)``, strictly increasing in time.

    ``log_pop``: ``(n_items,)`` float, ``-inf`` for items nobody interacts with.
    """
    cats = np.array([it.category for it in items])
    match = (np.isin([it.colour for it in items], user.favourite_colours) * 1.0
             + np.isin(cats, user.favourite_categories) * 1.0
             + (np.array([it.shape for it in items]) == user.favourite_shape) * 0.5)
    available = np.array([it.available for it in items])
    base = 1.7 * match + 0.8 * log_pop
    pop_only = _softmax(log_pop)

    span = SPAN_DAYS * 86400
    n_sessions = 1 if cold else 1 + int(rng.poisson(rng.lognormal(1.6, 0.6)))
    starts = np.sort(rng.integers(0, span - 86400, size=n_sessions))
    out: list[tuple[int, int, str]] = []
    t = -1

    def emit(row: int, kind: str, gap: tuple[int, int]) -> None:
        nonlocal t
        t = max(t + int(rng.integers(*gap)), t + 1)
        out.append((t, row, kind))

    for start in starts:
        t = max(t, int(start))
        logits = base.copy()
        if rng.random() < 0.5:  # a session focused on one category, mostly a favourite
            focus = _pick(rng, user.favourite_categories) if rng.random() < 0.75 else _pick(rng, list(CATEGORIES))
            logits = logits + 1.5 * (cats == focus)
        p = _softmax(logits)
        n_views = int(rng.integers(1, 3)) if cold else 1 + int(rng.poisson(3.0))
        cart: list[int] = []
        for _ in range(n_views):
            row = int(rng.choice(len(items), p=pop_only if rng.random() < 0.1 else p))
            emit(row, "view", (10, 240))
            if cold:  # cold-ish users: one or two views and nothing else
                continue
            if rng.random() < _sigmoid(-1.2 + 1.1 * match[row]):
                emit(row, "click", (2, 40))
                if available[row] and rng.random() < _sigmoid(-1.4 + 0.9 * match[row]):
                    emit(row, "add_to_cart", (5, 120))
                    cart.append(row)
        for row in cart:  # checkout at the end of the session
            if rng.random() < _sigmoid(0.2 + 0.6 * match[row]):
                emit(row, "purchase", (30, 400))
    return out


def _build_events(
    items: tuple[DemoItem, ...], users: tuple[DemoUser, ...], rng: np.random.Generator
) -> tuple[DemoEvent, ...]:
    n_items, n_users = len(items), len(users)
    log_pop = rng.normal(0.0, 1.0, size=n_items)
    n_cold_items = int(0.05 * n_items) if n_items >= 20 else 0
    log_pop[rng.choice(n_items, size=n_cold_items, replace=False)] = -np.inf
    cold_users = set(rng.choice(n_users, size=int(round(0.03 * n_users)), replace=False).tolist())

    rows: list[tuple[int, int, int, int, str]] = []  # (ts, user row, seq, item row, type)
    for u, user in enumerate(users):
        for seq, (ts, item, kind) in enumerate(_user_events(user, items, log_pop, u in cold_users, rng)):
            rows.append((ts, u, seq, item, kind))
    rows.sort()
    width = max(6, len(str(len(rows))))
    start = int(START.timestamp())
    return tuple(
        DemoEvent(f"E{k + 1:0{width}d}", users[u].user_id, items[i].item_id, kind, start + ts)
        for k, (ts, u, _, i, kind) in enumerate(rows)
    )


def build_shop(n_items: int = 300, n_users: int = 200, seed: int = 0) -> DemoShop:
    """The demo shop in memory: items, users (with their hidden tastes) and events, all from ``seed``.

    The catalogue depends only on ``n_items`` and ``seed``, not on ``n_users``.
    """
    if n_items < 1 or n_users < 1:
        raise ValueError(f"n_items and n_users must be at least 1, got {n_items} and {n_users}")
    items = _build_items(n_items, np.random.default_rng([seed, 1]))
    users = _build_users(n_users, np.random.default_rng([seed, 2]))
    events = _build_events(items, users, np.random.default_rng([seed, 3]))
    return DemoShop(items, users, events)


def iso_utc(ts: int) -> str:
    """Unix seconds as ISO 8601 UTC, e.g. ``2024-01-01T09:30:00Z``."""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def generate_demo(
    out_dir: Path, n_items: int = 300, n_users: int = 200, seed: int = 0, *, image_size: int = 160
) -> DemoFiles:
    """Write the demo shop under ``out_dir`` (created if needed; files of an earlier run are overwritten).

    Writes ``items.csv``, ``users.csv``, ``events.csv`` and ``images/<item_id>.jpg`` (``image_size``
    square RGB JPEGs). Deterministic: the same arguments give byte-identical files.
    """
    if not 32 <= image_size <= 1024:
        raise ValueError(f"image_size must be between 32 and 1024 pixels, got {image_size}")
    shop = build_shop(n_items, n_users, seed)
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)

    n_images = 0
    for k, item in enumerate(shop.items):
        if item.has_image:
            picture = render_product(item.category, COLOURS[item.colour], item.shape, image_size,
                                     np.random.default_rng([seed, 4, k]))
            picture.save(images_dir / f"{item.item_id}.jpg", format="JPEG", quality=88)
            n_images += 1

    files = DemoFiles(out_dir, out_dir / "items.csv", out_dir / "users.csv", out_dir / "events.csv", images_dir,
                      len(shop.items), len(shop.users), len(shop.events), n_images)
    _write_csv(files.items_csv, ["item_id", "title", "description", "category", "colour", "shape", "price",
                                 "available", "image"],
               [[it.item_id, it.title, it.description, it.category, it.colour, it.shape, f"{it.price:.2f}",
                 "true" if it.available else "false", f"images/{it.item_id}.jpg" if it.has_image else ""]
                for it in shop.items])
    _write_csv(files.users_csv, ["user_id", "segment"], [[u.user_id, u.segment] for u in shop.users])
    _write_csv(files.events_csv, ["event_id", "user_id", "item_id", "event_type", "timestamp", "value"],
               [[e.event_id, e.user_id, e.item_id, e.event_type, iso_utc(e.timestamp), ""] for e in shop.events])
    return files
