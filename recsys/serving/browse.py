"""Read-only look-ups for people browsing the catalogue (the web playground), straight from SQL.

The ranked answers (similar items, feeds, search) come from :class:`~recsys.serving.Runtime`, the code
the JSON API calls; this module only reads what a page shows around them: an item's stored fields, who
interacted with it, a user's recent events, and the counts of the overview page. Every query is bounded
(``limit``) or an aggregate, so a page costs the same on a large catalogue.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, case, func, select

from recsys.store.models import Event, Item, ItemEmbedding, User


@dataclass(frozen=True)
class ItemCard:
    """What a product tile shows besides the ranked fields."""

    id: str
    title: str
    category: str | None
    price: float | None
    available: bool
    image: str | None
    """The stored reference (absolute path or URL), as ingested."""


@dataclass(frozen=True)
class ItemDetails(ItemCard):
    description: str
    attributes: dict[str, Any]
    created_at: dt.datetime | None


@dataclass(frozen=True)
class Interaction:
    """One user's events on one item (item page) or one event (user page)."""

    user_id: str
    item_id: str
    event_type: str
    ts: int
    count: int = 1


def _card_columns() -> tuple[Any, ...]:
    return (Item.external_id, Item.title, Item.category, Item.price, Item.available, Item.image)


def item_cards(engine: Engine, ids: Sequence[str]) -> dict[str, ItemCard]:
    """The cards of ``ids`` (at most a page of them), keyed by id; unknown ids are left out."""
    if not ids:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(select(*_card_columns()).where(Item.external_id.in_(list(dict.fromkeys(ids))))).all()
    return {r[0]: ItemCard(r[0], r[1] or "", r[2], r[3], bool(r[4]), r[5]) for r in rows}


def item_details(engine: Engine, item_id: str) -> ItemDetails | None:
    with engine.connect() as conn:
        r = conn.execute(
            select(*_card_columns(), Item.description, Item.attributes, Item.created_at).where(Item.external_id == item_id)
        ).first()
    if r is None:
        return None
    return ItemDetails(r[0], r[1] or "", r[2], r[3], bool(r[4]), r[5], r[6] or "", dict(r[7] or {}), r[8])


def item_image_ref(engine: Engine, item_id: str) -> tuple[bool, str | None]:
    """``(found, stored image reference)`` of one item."""
    with engine.connect() as conn:
        r = conn.execute(select(Item.image).where(Item.external_id == item_id)).first()
    return (False, None) if r is None else (True, r[0])


def item_users(engine: Engine, item_id: str, limit: int = 24) -> tuple[int, list[Interaction]]:
    """``(distinct users, the ``limit`` most recent of them)``: each with their latest event type on the item,
    its time and how many events they have on it."""
    with engine.connect() as conn:
        iid = conn.execute(select(Item.id).where(Item.external_id == item_id)).scalar_one_or_none()
        if iid is None:
            return 0, []
        total = conn.execute(select(func.count(func.distinct(Event.user_id))).where(Event.item_id == iid)).scalar_one()
        latest = (
            select(Event.user_id, func.max(Event.ts).label("ts"), func.count().label("n"))
            .where(Event.item_id == iid).group_by(Event.user_id).order_by(func.max(Event.ts).desc(), Event.user_id)
            .limit(limit).subquery()
        )
        rows = conn.execute(select(User.external_id, latest.c.ts, latest.c.n, latest.c.user_id)
                            .join(latest, User.id == latest.c.user_id).order_by(latest.c.ts.desc(), User.external_id)).all()
        types: dict[int, str] = {}
        if rows:
            ev = conn.execute(
                select(Event.user_id, Event.event_type, Event.ts)
                .where(Event.item_id == iid, Event.user_id.in_([r[3] for r in rows])).order_by(Event.ts, Event.id)
            ).all()
            for uid, etype, _ts in ev:  # the last one wins
                types[uid] = etype
    return int(total), [Interaction(r[0], item_id, types.get(r[3], ""), int(r[1]), int(r[2])) for r in rows]


def user_recent_events(engine: Engine, user_id: str, limit: int = 30) -> tuple[bool, int, list[Interaction]]:
    """``(known user, number of events, the ``limit`` newest events, newest first)``."""
    with engine.connect() as conn:
        uid = conn.execute(select(User.id).where(User.external_id == user_id)).scalar_one_or_none()
        if uid is None:
            return False, 0, []
        total = conn.execute(select(func.count()).select_from(Event).where(Event.user_id == uid)).scalar_one()
        rows = conn.execute(
            select(Item.external_id, Event.event_type, Event.ts).join(Item, Item.id == Event.item_id)
            .where(Event.user_id == uid).order_by(Event.ts.desc(), Event.id.desc()).limit(limit)
        ).all()
    return True, int(total), [Interaction(user_id, r[0], r[1], int(r[2])) for r in rows]


def some_users(engine: Engine, limit: int = 12) -> list[tuple[str, int]]:
    """Users with the most events (``(id, events)``), for the user page's picker."""
    with engine.connect() as conn:
        top = (select(Event.user_id, func.count().label("n")).group_by(Event.user_id)
               .order_by(func.count().desc(), Event.user_id).limit(limit).subquery())
        rows = conn.execute(select(User.external_id, top.c.n).join(top, User.id == top.c.user_id)
                            .order_by(top.c.n.desc(), User.external_id)).all()
    return [(r[0], int(r[1])) for r in rows]


def categories(engine: Engine, limit: int = 500) -> list[str]:
    """The catalogue's categories (sorted, at most ``limit``), for filter menus."""
    with engine.connect() as conn:
        rows = conn.execute(select(Item.category).where(Item.category.is_not(None)).distinct()
                            .order_by(Item.category).limit(limit)).all()
    return [r[0] for r in rows]


@dataclass(frozen=True)
class EmbeddingCoverage:
    space: str
    encoder: str
    embedded: int
    failed: int


@dataclass(frozen=True)
class Overview:
    items: int
    available: int
    local_images: int
    url_images: int
    users: int
    events: int
    events_by_type: dict[str, int]
    coverage: list[EmbeddingCoverage]
    failures: list[tuple[str, str, str]]
    """``(item id, space, reason)`` of failed inputs, at most ``failure_limit``."""
    failures_total: int


def overview(engine: Engine, failure_limit: int = 50) -> Overview:
    """Counts for the overview page: catalogue, users, events by type, embeddings per space and encoder."""
    is_url = Item.image.like("http://%") | Item.image.like("https://%")
    with engine.connect() as conn:
        n, avail, url_images, with_image = conn.execute(select(
            func.count(), func.coalesce(func.sum(case((Item.available.is_(True), 1), else_=0)), 0),
            func.coalesce(func.sum(case((is_url, 1), else_=0)), 0),
            func.count(Item.image),
        )).one()
        users = conn.execute(select(func.count()).select_from(User)).scalar_one()
        by_type = dict(conn.execute(select(Event.event_type, func.count()).group_by(Event.event_type)
                                    .order_by(Event.event_type)).all())
        cov = conn.execute(
            select(ItemEmbedding.space, ItemEmbedding.encoder, func.count(ItemEmbedding.vector),
                   func.count(ItemEmbedding.error))
            .group_by(ItemEmbedding.space, ItemEmbedding.encoder).order_by(ItemEmbedding.space, ItemEmbedding.encoder)
        ).all()
        fails = conn.execute(
            select(Item.external_id, ItemEmbedding.space, ItemEmbedding.error).join(Item, Item.id == ItemEmbedding.item_id)
            .where(ItemEmbedding.error.is_not(None)).order_by(Item.external_id, ItemEmbedding.space).limit(failure_limit)
        ).all()
    return Overview(
        items=int(n), available=int(avail), local_images=int(with_image) - int(url_images), url_images=int(url_images),
        users=int(users), events=int(sum(by_type.values())), events_by_type={k: int(v) for k, v in by_type.items()},
        coverage=[EmbeddingCoverage(r[0], r[1], int(r[2]), int(r[3])) for r in cov],
        failures=[(r[0], r[1], r[2] or "") for r in fails],
        failures_total=sum(int(r[3]) for r in cov),
    )


def user_item_types(engine: Engine, user_id: str, item_ids: Sequence[str], weights: dict[str, float]) -> dict[str, str]:
    """For each of ``item_ids`` the user interacted with: their strongest event type on it (by ``weights``)."""
    if not item_ids:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(Item.external_id, Event.event_type).distinct().join(Event, Event.item_id == Item.id)
            .join(User, User.id == Event.user_id)
            .where(User.external_id == user_id, Item.external_id.in_(list(dict.fromkeys(item_ids))))
        ).all()
    best: dict[str, str] = {}
    for item, etype in rows:
        if item not in best or weights.get(etype, 0.0) > weights.get(best[item], 0.0):
            best[item] = etype
    return best


def validation_scores(artifact_path: str | None, max_bytes: int = 1 << 20) -> dict[str, Any]:
    """The validation scores a feed model recorded in its manifest (``selection`` without its chosen
    ``params``): e.g. ``{"temporal": {"users": 197, "ndcg@10": 0.22}, ...}``; ``{}`` when there are none."""
    import json
    from pathlib import Path

    if not artifact_path:
        return {}
    manifest = Path(artifact_path) / "manifest.json"
    try:
        if manifest.stat().st_size > max_bytes:
            return {}
        selection = json.loads(manifest.read_text(encoding="utf-8")).get("selection") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: v for k, v in selection.items() if k != "params"} if isinstance(selection, dict) else {}
