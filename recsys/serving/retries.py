"""Safe retries of write batches: the ``Idempotency-Key`` of a request, stored with its outcome.

A client that did not get an answer (timeout, dropped connection, a worker killed) sends the same batch
again with the same key. The first request stores its outcome (``idempotency_keys``) in the same
transaction as the events it wrote, so either both are committed or neither; a retry within
``service.idempotency_window_s`` gets the stored outcome back (nothing is written twice), also when
the two run at the same time (the second one's insert of the key fails on the unique constraint, its
transaction is rolled back and the first one's outcome is replayed). The same key with another body is
refused (:class:`~recsys.errors.IdempotencyConflictError`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError

from recsys.errors import IdempotencyConflictError
from recsys.store.models import IdempotencyRecord

log = logging.getLogger(__name__)

Save = Callable[[Connection, dict[str, Any]], None]
"""Stores a request's outcome inside the transaction that did its writes."""


def fingerprint(body: Any) -> str:
    """sha256 of the body in canonical JSON (key order does not matter)."""
    blob = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def run_once(engine: Engine, scope: str, key: str, body: Any, window_s: float,
             work: Callable[[Save], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """``(outcome, replayed)``: the stored outcome of ``key`` when there is one, else ``work(save)``, which
    must call ``save`` inside the transaction of its writes."""
    fp = fingerprint(body)
    hit = _stored(engine, scope, key, fp, window_s)
    if hit is not None:
        return hit, True

    def save(conn: Connection, outcome: dict[str, Any]) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        cutoff = now - dt.timedelta(seconds=window_s)
        table = IdempotencyRecord.__table__
        conn.execute(delete(table).where(table.c.created_at < cutoff))  # expired keys, this one's included
        conn.execute(insert(table).values(scope=scope, key=key, fingerprint=fp, response=outcome, created_at=now))

    try:
        return work(save), False
    except IntegrityError:  # the same key committed meanwhile by a concurrent request: ours was rolled back
        hit = _stored(engine, scope, key, fp, window_s)
        if hit is None:
            raise
        return hit, True


def _stored(engine: Engine, scope: str, key: str, fp: str, window_s: float) -> dict[str, Any] | None:
    cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=window_s)
    t = IdempotencyRecord
    with engine.connect() as conn:
        row = conn.execute(
            select(t.fingerprint, t.response, t.created_at).where(t.scope == scope, t.key == key)
        ).one_or_none()
    if row is None:
        return None
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=dt.timezone.utc)
    if created < cutoff:
        return None
    if row.fingerprint != fp:
        raise IdempotencyConflictError(
            f"Idempotency-Key {key!r} was already used with a different body; use a new key for a new batch"
        )
    return dict(row.response)
