"""Idempotent bulk append of an event log.

The idempotency key (``events.event_key``) is, in this order:

1. ``e:<user>:<value>`` when the mapping names an event-id column (``--event-id``), where ``<user>`` is
   the user's internal id: an event id is unique per user, so two users may use the same one (an id
   too long for the column is hashed: ``eh:<user>:<blake2b>``);
2. otherwise ``h:<time>:<digest>:<n>``, where ``time`` is the event's unix time in hex (so that a
   time-ordered log inserts into the key's index in order), ``digest`` hashes the row's values (user,
   item, type, timestamp, value and any extra columns) and ``n`` counts the identical rows before it
   *in the same file*.
   Two identical rows in one file (a customer who bought two of an article that day) are two events,
   ``...:0`` and ``...:1``; re-ingesting the file yields the same keys and adds nothing; a later file
   that repeats the same row once more than before adds exactly that one.

Users are created on first sight. A cell holding a NUL byte rejects its row (no database stores one in a
text column). The API's batches look up only their own users and items, so a batch costs the same
whatever the size of the user table. An event for an item that is not in the catalogue is rejected.
On PostgreSQL rows go through binary ``COPY`` into a temporary table and one ``INSERT ... ON CONFLICT DO
NOTHING``; on SQLite through ``executemany`` of ``INSERT OR IGNORE``. A file is read in chunks, one
transaction each; chunk ``N`` is written on a background thread while chunk ``N + 1`` is read and
validated (:class:`~recsys.ingest.pipeline.BackgroundWriter`), and the report counts a chunk only once
its transaction has committed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, Engine, select
from sqlalchemy.pool import SingletonThreadPool

from recsys.config import EventMapping
from recsys.ingest.event_writes import (
    ensure_users,
    event_key,
    insert_events,
    load_item_ids,
    load_user_ids,
)
from recsys.ingest.pipeline import BackgroundWriter
from recsys.ingest.readers import open_table
from recsys.ingest.report import IngestReport, RejectWriter
from recsys.ingest.values import (
    MAX_TIMESTAMP,
    RowError,
    TimestampParser,
    check_cells,
    is_missing,
    to_float,
    to_id,
    to_text,
)
from recsys.store.models import User

log = logging.getLogger(__name__)


class _RowValidator:
    """Validates one raw row and says precisely what is wrong (:class:`RowError`).

    The bulk path (:class:`_FrameParser`) is vectorised; this one runs only on the rows it flagged,
    to word the reject reason.
    """

    def __init__(self, mapping: EventMapping, allowed_types: Mapping[str, float], items: Mapping[str, int]) -> None:
        self.m = mapping
        self.allowed = allowed_types
        self.items = items
        self.ts = TimestampParser(mapping.timestamp)

    def __call__(self, row: dict[str, Any]) -> tuple[str, str, str, float | None, int]:
        m = self.m
        check_cells(row)
        user = to_id(row.get(m.user), m.user)
        item = to_id(row.get(m.item), m.item)
        ts = self.ts(row.get(m.timestamp))
        if m.event_type:
            etype = to_text(row.get(m.event_type))
            if not etype:
                raise RowError(m.event_type, f"missing event type; allowed: {', '.join(sorted(self.allowed))}")
        else:
            etype = m.default_event_type
        if etype not in self.allowed:
            raise RowError(m.event_type or "event_type", f"unknown event type {etype!r}; allowed: {', '.join(sorted(self.allowed))} (config: event_types)")
        value = to_float(row.get(m.value), m.value) if m.value else None
        if m.event_id:
            to_id(row.get(m.event_id), m.event_id)
        if item not in self.items:
            raise RowError(m.item, f"unknown item {item!r}: not in the catalogue; ingest the items first")
        return user, item, etype, value, ts


@dataclass
class _Parsed:
    key: list[str]
    """Content keys (``h:...``); with an event-id column the event ids, made per-user keys by :meth:`keys`."""
    user: list[str]
    item_id: list[int]
    etype: list[str]
    value: list[float | None]
    ts: list[int]
    attrs: list[str | None]
    by_event_id: bool = False

    def keys(self, user_ids: Sequence[int]) -> list[str]:
        """The rows' idempotency keys, given the internal ids of their users."""
        if not self.by_event_id:
            return self.key
        return [event_key(u, e) for u, e in zip(user_ids, self.key)]

    def rows(self, users: Mapping[str, int]) -> list[tuple[Any, ...]]:
        """Rows for ``events`` in the column order of :func:`recsys.ingest.event_writes.insert_events` (``users``: every row's user, external -> internal)."""
        user_ids = [users[u] for u in self.user]
        return list(zip(self.keys(user_ids), user_ids, self.item_id, self.etype, self.value, self.ts, self.attrs))


class _FrameParser:
    """Vectorised validation and normalisation of a chunk (pandas); the fast path for big logs.

    Returns the good rows and, for each bad row, its index in the chunk with the failing field. Keys
    follow the same rule as :class:`_EventParser` (content digest + occurrence number in the file).
    """

    def __init__(self, mapping: EventMapping, allowed_types: Mapping[str, float], extra_cols: list[str]) -> None:
        self.m = mapping
        self.allowed = allowed_types
        self.extra = extra_cols
        self.ts_parser = TimestampParser(mapping.timestamp)
        self.occurrences: dict[str, int] = {}

    @staticmethod
    def _ids(col: pd.Series) -> tuple[pd.Series, np.ndarray]:
        if pd.api.types.infer_dtype(col, skipna=False) == "string":
            out = col.str.strip()
        else:
            out = col.map(lambda v: _safe(to_id, v, "id"))
        lengths = out.str.len().fillna(0).to_numpy()
        ok = (lengths > 0) & (lengths <= 255)
        return out, ok

    def _timestamps(self, col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        kind = pd.api.types.infer_dtype(col, skipna=False)
        if kind in ("integer", "floating", "mixed-integer-float"):
            ts = col.to_numpy(dtype="float64", na_value=np.nan, copy=True)
        elif kind == "string":
            ts = pd.to_numeric(col, errors="coerce").to_numpy(dtype="float64", na_value=np.nan, copy=True)
            todo = np.isnan(ts)
            if todo.any():  # ISO dates: parse each distinct string once
                rest = col[todo]
                parsed = {v: _safe(self.ts_parser, v) for v in pd.unique(rest)}
                ts[todo] = [np.nan if parsed[v] is None else float(parsed[v]) for v in rest]
        else:  # mixed types (JSON Lines): one value at a time
            ts = np.array([np.nan if (t := _safe(self.ts_parser, v)) is None else float(t) for v in col], dtype="float64")
        ok = np.isfinite(ts) & (ts >= 0) & (ts <= MAX_TIMESTAMP)
        return np.where(ok, ts, 0).astype(np.int64), ok

    def __call__(self, frame: pd.DataFrame, items: dict[str, int]) -> tuple[_Parsed, list[tuple[int, str | None, str]]]:
        m = self.m
        n = len(frame)
        errors: list[tuple[int, str | None, str]] = []
        bad = np.zeros(n, dtype=bool)

        def flag(mask: np.ndarray, field: str | None, reason: str) -> None:
            new = mask & ~bad
            errors.extend((int(i), field, reason) for i in np.flatnonzero(new))
            bad[new] = True

        nul = np.zeros(n, dtype=bool)
        for column in frame.columns:  # no database stores a NUL byte in text: the row is rejected, naming the column
            has = _has_nul(frame[column])
            flag(has & ~nul, str(column), "contains a NUL byte (\\x00); text may not contain NUL")
            nul |= has
        user, ok = self._ids(frame[m.user])
        flag(~ok, m.user, "missing or invalid user id")
        item, ok = self._ids(frame[m.item])
        flag(~ok, m.item, "missing or invalid item id")
        ts, ok = self._timestamps(frame[m.timestamp])
        flag(~ok, m.timestamp, f"cannot parse the timestamp; expected unix seconds (0 to {MAX_TIMESTAMP}) or an ISO 8601 date/time")
        if m.event_type:
            col = frame[m.event_type]
            etype = col.str.strip() if pd.api.types.infer_dtype(col, skipna=False) == "string" else col.map(to_text)
        else:
            etype = pd.Series([m.default_event_type] * n, index=frame.index, dtype=object)
        flag(~etype.isin(list(self.allowed)).to_numpy(), m.event_type or "event_type",
             f"unknown event type; allowed: {', '.join(sorted(self.allowed))}")
        if m.value:
            raw = frame[m.value]
            val = pd.to_numeric(raw, errors="coerce").astype("float64")
            missing = raw.map(is_missing).to_numpy(dtype=bool)
            flag(~missing & ~np.isfinite(val.to_numpy()), m.value, "expected a number")
            values: list[float | None] = [None if mi else float(v) for mi, v in zip(missing, val.to_numpy())]
        else:
            values = [None] * n
        eid = None
        if m.event_id:
            eid, ok = self._ids(frame[m.event_id])
            flag(~ok, m.event_id, "missing or invalid event id")
        item_id = item.map(items)
        flag(item_id.isna().to_numpy() & ~bad, m.item, "unknown item: not in the catalogue; ingest the items first")
        if self.extra:
            cols = [frame[c].tolist() for c in self.extra]
            attrs_list = []
            for vals in zip(*cols):
                d = {c: v for c, v in zip(self.extra, vals) if not is_missing(v)}
                attrs_list.append(json.dumps(d, ensure_ascii=False, default=str, sort_keys=True) if d else None)
            attrs = pd.Series(attrs_list, index=frame.index, dtype=object)
        else:
            attrs = pd.Series([None] * n, index=frame.index, dtype=object)

        good = ~bad
        g_user = user[good].tolist()
        g_item = item[good].tolist()
        g_type = etype[good].tolist()
        g_ts = ts[good].tolist()
        g_val = [v for v, k in zip(values, good) if k]
        g_attrs = attrs[good].tolist()
        if eid is not None:
            keys = eid[good].tolist()  # made per-user keys once the users' internal ids are known
        else:
            keys = []
            occ = self.occurrences
            for u, it, ty, t, v, a in zip(g_user, g_item, g_type, g_ts, g_val, g_attrs):
                blob = f"{u}\x1f{it}\x1f{ty}\x1f{t}\x1f{'' if v is None else repr(v)}\x1f{a or ''}"
                digest = hashlib.blake2b(blob.encode("utf-8"), digest_size=16).hexdigest()
                k = occ.get(digest, 0)
                occ[digest] = k + 1
                # The time prefix keeps the unique index's inserts close together for time-ordered logs.
                keys.append(f"h:{t:011x}:{digest}:{k}")
        parsed = _Parsed(keys, g_user, [int(x) for x in item_id[good].tolist()], g_type, g_val, g_ts, g_attrs,
                         by_event_id=eid is not None)
        return parsed, sorted(errors)


def _has_nul(col: pd.Series) -> np.ndarray:
    """``(n,)`` bool: which cells are text holding a NUL byte (string columns vectorised)."""
    if col.dtype == object:
        return col.map(lambda v: isinstance(v, str) and "\x00" in v).to_numpy(dtype=bool)
    if pd.api.types.is_string_dtype(col.dtype):
        return col.str.contains("\x00", regex=False).fillna(False).to_numpy(dtype=bool)
    return np.zeros(len(col), dtype=bool)


def _safe(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except RowError:
        return None


def ingest_events(
    engine: Engine,
    path: str | Path,
    mapping: EventMapping,
    allowed_types: Mapping[str, float],
    *,
    fmt: str | None = None,
    reject_path: str | Path,
    chunk_size: int = 50_000,
) -> IngestReport:
    """Append the events in ``path`` idempotently (see the module docstring for the key rule).

    Every chunk is committed on its own: good rows land even when others are rejected, and an
    interrupted run can simply be repeated. Writing overlaps parsing (one writer thread, one chunk
    ahead). When a write fails, no later chunk is written and the error is raised; the chunks committed
    before it stay, and the log says how many events they held.

    Raises:
        InputFormatError: before anything is written, for an unreadable file, a wrong format or a
            mapped column missing from the file.
    """
    t0 = time.perf_counter()
    reader = open_table(path, fmt)
    mapped = {
        "--user": mapping.user,
        "--item": mapping.item,
        "--timestamp": mapping.timestamp,
        "--type": mapping.event_type,
        "--value": mapping.value,
        "--event-id": mapping.event_id,
        "--attributes": list(mapping.attributes) if mapping.attributes is not None else None,
    }
    reader.require(mapped)
    extra = reader.extra_columns(mapped, mapping.attributes)
    frame_parser = _FrameParser(mapping, allowed_types, extra)
    report = IngestReport("events", str(path), reject_path=str(reject_path))
    with engine.connect() as conn:
        items = load_item_ids(conn)
        users = {k: v for k, v in conn.execute(select(User.external_id, User.id))}
    row_parser = _RowValidator(mapping, allowed_types, items)

    def write(parsed: _Parsed) -> _Written:
        """One chunk, one transaction (runs on the writer thread, which alone uses ``users``)."""
        with engine.begin() as conn:
            new_users = ensure_users(conn, parsed.user, users)
            rows = parsed.rows(users)
            inserted = insert_events(conn, rows)
        return _Written(len(rows), inserted, new_users)

    # Chunk N is written (server work, GIL released) while chunk N + 1 is read and validated.
    # A SingletonThreadPool (in-memory SQLite) gives each thread its own database: write inline there.
    writer: BackgroundWriter[_Parsed, _Written] = BackgroundWriter(
        write, name="recsys-ingest-events", background=not isinstance(engine.pool, SingletonThreadPool)
    )
    try:
        with RejectWriter(Path(reject_path), reader.position_name) as rejects, writer:
            for chunk in reader.frames(chunk_size):
                if writer.failed:
                    break  # close() below raises the write error
                report.rows += len(chunk.positions) + len(chunk.bad)
                for pos, bad in chunk.bad:
                    rejects.write(pos, None, bad.reason, bad.raw)
                if not chunk.positions:
                    continue
                parsed, errors = frame_parser(chunk.frame, items)
                for i, field, reason in errors:
                    row = {k: v for k, v in chunk.frame.iloc[i].to_dict().items() if not (isinstance(v, float) and v != v)}
                    try:  # the row-at-a-time parser gives the most precise message
                        row_parser(row)
                    except RowError as err:
                        field, reason = err.field, err.reason
                    rejects.write(chunk.positions[i], field, reason, row)
                if parsed.user:
                    writer.submit(parsed)
            writer.close()
            report.rejected = rejects.count
            report.reject_reasons = dict(rejects.reasons)
    except BaseException:
        done = writer.results
        log.error(
            "ingest of %s stopped: %s events in %s committed chunks were stored before the failure "
            "(%s of them new); running the same file again adds only the missing ones",
            path, f"{sum(w.rows for w in done):,}", len(done), f"{sum(w.inserted for w in done):,}",
        )
        raise
    for w in writer.results:
        report.inserted += w.inserted
        report.unchanged += w.rows - w.inserted
        report.new_users += w.new_users
    if not report.rejected:
        report.reject_path = None
    report.seconds = time.perf_counter() - t0
    log.info(report.summary())
    return report


@dataclass(frozen=True)
class _Written:
    """What writing one chunk did, counted after its transaction committed."""

    rows: int
    inserted: int
    new_users: int


@dataclass(frozen=True)
class AppendResult:
    """Outcome of :func:`append_event_records`: ``errors`` holds ``(index, field, reason)`` per bad record."""

    inserted: int
    duplicates: int
    errors: list[tuple[int, str | None, str]]
    users: list[str]
    """External ids of the users whose events were accepted (new or already present)."""


def append_event_records(
    engine: Engine,
    records: list[dict[str, Any]],
    mapping: EventMapping,
    allowed_types: Mapping[str, float],
    *,
    finish: Callable[[Connection, AppendResult], None] | None = None,
) -> AppendResult:
    """Append a batch of events given as dicts (the API's ``POST /v1/events``), with the file rules.

    Keys follow the module's rule with "the same batch" in place of "the same file". Only the batch's
    users and items are looked up (the cost follows the batch, not the tables). Good records are
    committed in one transaction before this returns; bad ones are reported, not written. ``finish`` runs
    inside that transaction with the outcome (e.g. to store it under an idempotency key): when it raises,
    nothing of the batch is stored.
    """
    import pandas as pd

    columns = list(dict.fromkeys(k for r in records for k in r))
    for needed in (mapping.user, mapping.item, mapping.timestamp, mapping.event_type, mapping.value, mapping.event_id):
        if needed and needed not in columns:
            columns.append(needed)
    frame = pd.DataFrame.from_records(records, columns=columns).astype(object)
    used = {mapping.user, mapping.item, mapping.timestamp, mapping.event_type, mapping.value, mapping.event_id}
    extra = list(mapping.attributes) if mapping.attributes is not None else [c for c in columns if c not in used]
    with engine.connect() as conn:
        items = load_item_ids(conn, [_as_id(r.get(mapping.item)) for r in records])
    parsed, flagged = _FrameParser(mapping, allowed_types, extra)(frame, items)
    validator = _RowValidator(mapping, allowed_types, items)
    errors: list[tuple[int, str | None, str]] = []
    for i, field, reason in flagged:
        try:
            validator({k: v for k, v in records[i].items()})
        except RowError as err:
            field, reason = err.field, err.reason
        errors.append((i, field, reason))
    if not parsed.user and finish is None:
        return AppendResult(0, 0, errors, [])
    with engine.begin() as conn:
        inserted = 0
        if parsed.user:
            users = load_user_ids(conn, parsed.user)
            ensure_users(conn, parsed.user, users)
            inserted = insert_events(conn, parsed.rows(users))
        result = AppendResult(inserted, len(parsed.user) - inserted, errors, list(dict.fromkeys(parsed.user)))
        if finish is not None:
            finish(conn, result)
    return result


def _as_id(value: Any) -> Any:
    """The id a raw value stands for (for look-ups; validation comes later), or ``None``."""
    try:
        return to_id(value, "id")
    except RowError:
        return None
