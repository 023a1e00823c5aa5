"""What a user was shown and did not click: the "skipped" features of the learned reranker.

A feed list shown to a user whose item was not clicked in it is a weak negative for that item (more so at
the top of the list, where it was seen). From the impression log and the attributed events, per user and
item: the number of the user's feed lists that showed the item without a click on it, and the best
(smallest) position among those. Clicks themselves are not used as a feature (a click without a
consumption is left to the labels).

:func:`skipped` is pure; :func:`read_user_lists` reads the log (a user's lists through the index
``ix_impressions_user_ts``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, select


@dataclass(frozen=True)
class ShownList:
    """One logged feed list: time, items by position, and the items clicked in it."""

    ts_ms: int
    request_id: str
    items: tuple[str, ...]
    clicked: frozenset[str]


def skipped(lists: Iterable[ShownList]) -> dict[str, tuple[int, int]]:
    """item -> (lists that showed it without a click on it, best position among those)."""
    out: dict[str, tuple[int, int]] = {}
    for lst in lists:
        for pos, item in enumerate(lst.items):
            if item in lst.clicked:
                continue
            n, best = out.get(item, (0, pos))
            out[item] = (n + 1, min(best, pos))
    return out


def read_user_lists(engine: Engine, users: Sequence[str] | None = None, since_ms: int = 0,
                    surface: str = "feed", latest: int | None = None) -> dict[str, list[ShownList]]:
    """user -> their logged lists of ``surface`` (oldest first) with the clicks attributed to each.

    ``users``: only these (``None``: everybody); ``latest``: only the newest ``latest`` lists of the query
    (the serving path reads one user's with a bound, so a user who requested many feeds costs no more)."""
    from recsys.store.models import Event, Impression, ImpressionItem, Item, User

    with engine.connect() as conn:
        q = select(Impression.request_id, Impression.user_id, Impression.ts_ms).where(
            Impression.surface == surface, Impression.ts_ms >= since_ms, Impression.user_id.is_not(None))
        if users is not None:
            q = q.where(Impression.user_id.in_(list(users)))
        if latest is not None:
            q = q.order_by(Impression.ts_ms.desc(), Impression.request_id.desc()).limit(latest)
        heads = {r.request_id: (r.user_id, r.ts_ms) for r in conn.execute(q)}
        if not heads:
            return {}
        if latest is not None:
            since_ms = max(since_ms, min(ts for _, ts in heads.values()))
        items: dict[str, list[tuple[int, str]]] = defaultdict(list)
        iq = select(ImpressionItem.request_id, ImpressionItem.position, ImpressionItem.item_id).join(
            Impression, Impression.request_id == ImpressionItem.request_id).where(
            Impression.surface == surface, Impression.ts_ms >= since_ms)
        if users is not None:
            iq = iq.where(Impression.user_id.in_(list(users)))
        for r in conn.execute(iq):
            items[r.request_id].append((r.position, r.item_id))
        eq = select(Event.attributes, Item.external_id).join(Item, Item.id == Event.item_id).join(
            User, User.id == Event.user_id).where(Event.attributes.is_not(None), Event.ts >= since_ms // 1000 - 1)
        if users is not None:
            eq = eq.where(User.external_id.in_(list(users)))
        clicked: dict[str, set[str]] = defaultdict(set)
        for attrs, item in conn.execute(eq):
            rid = attrs.get("request_id") if isinstance(attrs, dict) else None
            if rid in heads:
                clicked[rid].add(item)
    out: dict[str, list[ShownList]] = defaultdict(list)
    for rid, (user, ts) in heads.items():
        out[user].append(ShownList(ts, rid, tuple(i for _, i in sorted(items.get(rid, []))), frozenset(clicked.get(rid, ()))))
    for lists in out.values():
        lists.sort(key=lambda s: (s.ts_ms, s.request_id))
    return dict(out)
