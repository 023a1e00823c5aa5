"""Writing events to SQL: id look-ups, new users, and the idempotent insert of a chunk of event rows.

The parsing and validation of event files and API batches is :mod:`recsys.ingest.events`; this module
only talks to the database: external -> internal id maps (for the whole table or just a batch's ids),
users created on first sight, and ``INSERT`` that skips event keys already present (``executemany`` on
SQLite, binary ``COPY`` into a staging table plus one ``INSERT ... ON CONFLICT DO NOTHING`` on PostgreSQL).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, select, text

from recsys.store.models import Item, User

_EVENT_COLS = ("event_key", "user_id", "item_id", "event_type", "value", "ts", "attributes")
_STAGE_TYPES = ["text", "int8", "int8", "text", "float8", "int8", "text"]
"""PostgreSQL types of ``events_stage``'s columns, in ``_EVENT_COLS`` order (binary COPY needs them)."""


def load_item_ids(conn: Connection, only: Sequence[str] | None = None) -> dict[str, int]:
    """external id -> internal id for the whole catalogue, or for the ids in ``only``."""
    return _load_ids(conn, Item, only)


def load_user_ids(conn: Connection, only: Sequence[str] | None = None) -> dict[str, int]:
    """external id -> internal id for every user, or for the ids in ``only`` (those that exist)."""
    return _load_ids(conn, User, only)


def _load_ids(conn: Connection, model: Any, only: Sequence[str] | None) -> dict[str, int]:
    if only is None:
        return {k: v for k, v in conn.execute(select(model.external_id, model.id))}
    wanted = [x for x in dict.fromkeys(only) if isinstance(x, str)]
    out: dict[str, int] = {}
    for start in range(0, len(wanted), 5_000):
        part = wanted[start : start + 5_000]
        out.update((k, v) for k, v in conn.execute(select(model.external_id, model.id).where(model.external_id.in_(part))))
    return out


def event_key(user_id: int, event_id: str) -> str:
    """The idempotency key of an event with an explicit id: unique per (internal user id, event id)."""
    key = f"e:{user_id}:{event_id}"
    if len(key) <= 255:
        return key
    return f"eh:{user_id}:{hashlib.blake2b(event_id.encode('utf-8'), digest_size=20).hexdigest()}"


def ensure_users(conn: Connection, external_ids: list[str], known: dict[str, int]) -> int:
    """Create the users not yet in ``known`` and add their ids to it. Returns how many were new."""
    missing = [u for u in dict.fromkeys(external_ids) if u not in known]
    if not missing:
        return 0
    users = User.__table__
    dialect = conn.dialect.name
    if dialect == "postgresql":
        # Two statements whatever the number of users: arrays travel as one (binary) parameter each.
        with conn.connection.driver_connection.cursor() as cur:
            cur.execute(
                "INSERT INTO users (external_id, attributes, created_at) "
                "SELECT u, '{}', CURRENT_TIMESTAMP FROM unnest(%s::text[]) AS u ON CONFLICT (external_id) DO NOTHING",
                (missing,),
            )
            cur.execute("SELECT external_id, id FROM users WHERE external_id = ANY(%s::text[])", (missing,))
            known.update(cur.fetchall())
        return len(missing)
    if dialect == "sqlite":
        # Straight to the driver: this runs for every new user of a big log.
        cur = conn.connection.driver_connection.cursor()
        cur.executemany(
            "INSERT INTO users (external_id, attributes, created_at) VALUES (?, '{}', CURRENT_TIMESTAMP) "
            "ON CONFLICT (external_id) DO NOTHING",
            [(u,) for u in missing],
        )
        cur.close()
    else:
        conn.execute(users.insert(), [{"external_id": u, "attributes": {}} for u in missing])
    for start in range(0, len(missing), 5_000):
        part = missing[start : start + 5_000]
        known.update((k, v) for k, v in conn.execute(select(users.c.external_id, users.c.id).where(users.c.external_id.in_(part))))
    return len(missing)



def insert_events(conn: Connection, rows: list[tuple[Any, ...]]) -> int:
    """Insert, skipping keys already present. Returns how many rows were new."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return _insert_events_pg(conn, rows)
    cols = ", ".join(_EVENT_COLS)
    marks = ", ".join("?" for _ in _EVENT_COLS)
    if dialect == "sqlite":
        raw = conn.connection.driver_connection
        cur = raw.cursor()
        cur.executemany(f"INSERT OR IGNORE INTO events ({cols}) VALUES ({marks})", rows)
        return max(cur.rowcount, 0)
    # Any other backend: portable but slower; skip duplicates by checking keys first.
    keys = [r[0] for r in rows]
    present = set(conn.execute(text("SELECT event_key FROM events WHERE event_key IN :k").bindparams(k=keys)).scalars())
    fresh = [dict(zip(_EVENT_COLS, r)) for r in rows if r[0] not in present]
    if fresh:
        conn.execute(text(f"INSERT INTO events ({cols}) VALUES ({', '.join(':' + c for c in _EVENT_COLS)})"), fresh)
    return len(fresh)


def _insert_events_pg(conn: Connection, rows: list[tuple[Any, ...]]) -> int:
    raw = conn.connection.driver_connection
    with raw.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS events_stage "
            "(event_key text, user_id bigint, item_id bigint, event_type text, value double precision, ts bigint, attributes text) "
            "ON COMMIT DELETE ROWS"
        )
        # Binary COPY: no text formatting on the client, no parsing on the server.
        with cur.copy(f"COPY events_stage ({', '.join(_EVENT_COLS)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_STAGE_TYPES)
            for r in rows:
                copy.write_row(r)
        cur.execute(
            f"INSERT INTO events ({', '.join(_EVENT_COLS)}) "
            "SELECT event_key, user_id, item_id, event_type, value, ts, attributes::json FROM events_stage "
            "ON CONFLICT (event_key) DO NOTHING"
        )
        inserted = cur.rowcount
        cur.execute("TRUNCATE events_stage")
    return max(inserted, 0)
