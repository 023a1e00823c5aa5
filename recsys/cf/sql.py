"""Read the events table into an :class:`~recsys.cf.matrix.InteractionMatrix` (the IO edge of CF).

One streamed ``SELECT user_id, item_id, event_type, value, ts FROM events`` through the DBAPI cursor,
fetched in chunks straight into numpy arrays (no ORM objects); on PostgreSQL a server-side cursor, so
memory stays at one chunk of rows plus the arrays. The item map is the whole catalogue (items without
events included, so that the hybrid can place them); the user map is every user with at least one event.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine, func, select

from recsys.cf.idmap import IdMap
from recsys.cf.matrix import InteractionMatrix, combine_events, decay_factors, event_weights
from recsys.cf.settings import CFConfig
from recsys.store.models import Event, Item, User

log = logging.getLogger(__name__)

__all__ = ["EventColumns", "matrix_from_sql", "read_event_columns"]


@dataclass(frozen=True)
class EventColumns:
    """The events table as columns (internal ids).

    Attributes:
        user_id, item_id: ``(n,)`` int64 internal ids (``users.id``, ``items.id``).
        event_type: ``(n,)`` object strings.
        value: ``(n,)`` float64, ``NaN`` where NULL.
        ts: ``(n,)`` int64 unix seconds.
    """

    user_id: np.ndarray
    item_id: np.ndarray
    event_type: np.ndarray
    value: np.ndarray
    ts: np.ndarray


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: millions of fresh row tuples would trigger it over and over."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def read_event_columns(
    engine: Engine, *, with_value: bool = True, with_ts: bool = True, chunk_size: int = 200_000
) -> EventColumns:
    """Stream the events table into numpy columns.

    Args:
        with_value, with_ts: fetch these columns; when ``False`` the column is all ``NaN`` / all 0
            (fewer Python objects per row: about a third faster on SQLite).
    """
    columns = ["user_id", "item_id", "event_type"] + (["value"] if with_value else []) + (["ts"] if with_ts else [])
    sql = f"SELECT {', '.join(columns)} FROM events"
    parts: list[list[np.ndarray]] = []
    with _gc_paused(), engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        if dbapi is None:  # pragma: no cover - a pooled connection always has one
            raise RuntimeError("no DBAPI connection")
        if engine.dialect.name == "postgresql":
            cur = dbapi.cursor(name="recsys_events")  # server-side: rows arrive chunk by chunk
        else:
            cur = dbapi.cursor()
        try:
            cur.execute(sql)
            while True:
                rows = cur.fetchmany(chunk_size)
                if not rows:
                    break
                cols = list(zip(*rows))
                del rows
                part = [
                    np.array(cols[0], dtype=np.int64),
                    np.array(cols[1], dtype=np.int64),
                    np.array(cols[2], dtype=object),
                ]
                k = 3
                if with_value:
                    part.append(np.array(cols[k], dtype=np.float64))  # None -> NaN
                    k += 1
                if with_ts:
                    part.append(np.array(cols[k], dtype=np.int64))
                parts.append(part)
        finally:
            cur.close()
        conn.rollback()
    joined = [np.concatenate([p[k] for p in parts]) for k in range(len(columns))] if parts else None
    n = 0 if joined is None else joined[0].shape[0]
    if joined is None:
        joined = [np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object)]
        joined += [np.zeros(0)] * with_value + [np.zeros(0, dtype=np.int64)] * with_ts
    value = joined[3] if with_value else np.full(n, np.nan)
    ts = joined[-1] if with_ts else np.zeros(n, dtype=np.int64)
    return EventColumns(joined[0], joined[1], joined[2], value, ts)


def _id_table(engine: Engine, model: type[Item] | type[User]) -> tuple[np.ndarray, np.ndarray]:
    """``(internal ids ascending, external ids)`` of a table, through the DBAPI cursor."""
    table = model.__tablename__
    with _gc_paused(), engine.connect() as conn:
        dbapi = conn.connection.dbapi_connection
        if dbapi is None:  # pragma: no cover
            raise RuntimeError("no DBAPI connection")
        cur = dbapi.cursor()
        try:
            cur.execute(f"SELECT id, external_id FROM {table} ORDER BY id")
            rows = cur.fetchall()
        finally:
            cur.close()
        conn.rollback()
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object)
    ids, ext = zip(*rows)
    return np.array(ids, dtype=np.int64), np.array(ext, dtype=object)


def _max_ts(engine: Engine) -> int | None:
    with engine.connect() as conn:
        value = conn.execute(select(func.max(Event.ts))).scalar_one_or_none()
    return None if value is None else int(value)


def _rows_of(internal: np.ndarray, sorted_ids: np.ndarray) -> np.ndarray:
    """Row of each internal id in ``sorted_ids`` (a lookup table when ids are dense, else a binary search)."""
    if internal.size == 0:
        return np.zeros(0, dtype=np.int64)
    if sorted_ids.size == 0:
        raise RuntimeError("events refer to ids missing from their table (foreign keys off?)")
    top = int(sorted_ids[-1])
    if 0 <= sorted_ids[0] and top <= 4 * sorted_ids.shape[0] + 1_000_000:
        table = np.full(top + 1, -1, dtype=np.int64)
        table[sorted_ids] = np.arange(sorted_ids.shape[0])
        pos = table[np.clip(internal, 0, top)]
        bad = (pos < 0) | (internal > top) | (internal < 0)
    else:
        pos = np.minimum(np.searchsorted(sorted_ids, internal), sorted_ids.shape[0] - 1)
        bad = sorted_ids[pos] != internal
    if bad.any():
        raise RuntimeError("events refer to ids missing from their table (foreign keys off?)")
    return pos


def matrix_from_sql(
    engine: Engine, cfg: CFConfig, type_weights: Mapping[str, float], reference_ts: int | None = None
) -> InteractionMatrix:
    """Build the interaction matrix from the events table.

    Args:
        cfg: the ``cf`` section (value transform, half-life, repeat rule).
        type_weights: ``config.event_types``; events of other types are dropped with a warning.
        reference_ts: time the decay counts back from (default: the newest event).
    """
    t0 = time.perf_counter()
    need_value = cfg.value_transform != "ignore" and bool(cfg.value_event_types)
    need_ts = cfg.half_life_days is not None or cfg.combine == "last"
    ev = read_event_columns(engine, with_value=need_value, with_ts=need_ts)
    t1 = time.perf_counter()
    item_ids, item_ext = _id_table(engine, Item)
    user_ids, user_ext = _id_table(engine, User)
    weights, unknown = event_weights(ev.event_type, ev.value, type_weights, cfg)
    for etype, count in unknown.items():
        log.warning("dropped %d events of type %r, which config.event_types does not list", count, etype)
    weights = weights * decay_factors(ev.ts, cfg.half_life_days, reference_ts)
    item_rows = _rows_of(ev.item_id, item_ids)
    user_rows_all = _rows_of(ev.user_id, user_ids)
    keep = weights > 0
    active_users = np.flatnonzero(np.bincount(user_rows_all[keep], minlength=user_ids.shape[0]))
    remap = np.full(user_ids.shape[0], -1, dtype=np.int64)
    remap[active_users] = np.arange(active_users.shape[0])
    user_rows = remap[user_rows_all]
    mat = combine_events(
        np.where(keep, user_rows, 0), item_rows, np.where(keep, weights, 0.0), ev.ts,
        (active_users.shape[0], item_ids.shape[0]), cfg.combine,
    )
    log.info(
        "interaction matrix %dx%d, %d pairs from %d events (read %.2fs, build %.2fs)",
        mat.shape[0], mat.shape[1], mat.nnz, int(keep.sum()), t1 - t0, time.perf_counter() - t1,
    )
    return InteractionMatrix(
        weights=mat,
        users=IdMap(user_ext[active_users], kind="user"),
        items=IdMap(item_ext, kind="item"),
        n_events=int(keep.sum()),
        last_ts=(int(ev.ts.max()) if need_ts else _max_ts(engine)) if ev.ts.size else None,
    )
