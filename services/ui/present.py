"""Turning ranked answers and registry rows into what a page shows (plain data; the templates escape it)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from recsys.serving.browse import ItemCard

VERBS = {"purchase": "bought", "add_to_cart": "put in the cart", "click": "clicked", "view": "viewed",
         "rating": "rated", "interaction": "liked"}


@dataclass(frozen=True)
class Reason:
    text: str
    item: str | None = None
    """Id of the item the reason refers to (linked), if any."""
    item_title: str | None = None


@dataclass(frozen=True)
class Tile:
    """One product tile of a grid."""

    id: str
    title: str
    category: str | None
    price: float | None
    available: bool
    score: float | None = None
    reasons: list[Reason] = field(default_factory=list)
    note: str | None = None


def reason(r: dict[str, Any], titles: dict[str, str], verbs: dict[str, str]) -> Reason:
    """One API reason as words: ``similar_to`` names the history item and what the user did with it."""
    kind = r.get("type", "")
    other = r.get("item")
    if kind == "similar_to" and other:
        verb = verbs.get(other)
        return Reason(f"similar to what you {verb}:" if verb else "similar to", other, titles.get(other, other))
    words = {
        "collaborative": "people with similar taste liked it",
        "popular": "popular",
        "new_item": "new in the catalogue",
        "query_match": "matches the query",
        "personalised": "nudged by the user's taste",
    }
    return Reason(words.get(kind, kind.replace("_", " ")))


def tiles(ranked: list[Any], cards: dict[str, ItemCard], verbs: dict[str, str] | None = None) -> list[Tile]:
    """Tiles of ranked items (``RankedItem``), with the cards' price and availability."""
    verbs = verbs or {}
    titles = {i: c.title for i, c in cards.items()}
    out = []
    for it in ranked:
        card = cards.get(it.id)
        out.append(Tile(
            it.id, it.title or (card.title if card else it.id), it.category, card.price if card else None,
            card.available if card else True, float(it.score), [reason(r, titles, verbs) for r in it.reasons],
        ))
    return out


def reason_items(ranked: list[Any]) -> list[str]:
    """Ids that reasons refer to (to fetch their titles)."""
    return [r["item"] for it in ranked for r in it.reasons if r.get("item")]


def when(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M")


def price(value: float | None) -> str:
    return "" if value is None else f"{value:,.2f}"


def metric_rows(metrics: dict[str, Any], prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    """A registry ``metrics`` dict flattened to ``(dotted key, value)`` rows (numbers rounded; at most 40 rows)."""
    rows: list[tuple[str, str]] = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and depth < 3:
            rows.extend(metric_rows(value, f"{name}.", depth + 1))
        elif isinstance(value, float):
            rows.append((name, f"{value:.4g}"))
        elif isinstance(value, (int, str, bool)) or value is None:
            rows.append((name, str(value)))
        else:
            text = json.dumps(value, default=str)
            rows.append((name, text if len(text) <= 120 else text[:117] + "..."))
    return rows[:40]
