"""Event batches written through the service (``POST /v1/events``).

Events are appended idempotently (:func:`recsys.ingest.append_event_records`); the next feed request
reads them. Item upserts (``PUT /v1/items``) are in :mod:`recsys.serving.item_writes`.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine

from recsys.config import Config, EventMapping


def record_events(engine: Engine, config: Config, records: list[dict[str, Any]],
                  idempotency_key: str | None = None) -> dict[str, Any]:
    """Append a batch of events (a missing timestamp is now); bad rows are reported, good ones land.

    With ``idempotency_key`` the outcome is stored with the events (one transaction) and a retry with the
    same key gets it back, ``"replayed": true``, writing nothing (:mod:`recsys.serving.retries`)."""
    from recsys.serving.retries import run_once

    if idempotency_key is None:
        return _append(engine, config, records, None)
    outcome, replayed = run_once(engine, "events", idempotency_key, records, config.service.idempotency_window_s,
                                 lambda save: _append(engine, config, records, save))
    return {**outcome, "replayed": True} if replayed else outcome


def _append(engine: Engine, config: Config, records: list[dict[str, Any]], save: Any) -> dict[str, Any]:
    from recsys.ingest import append_event_records

    now = int(time.time())
    rows = [{**r, "timestamp": r.get("timestamp") if r.get("timestamp") is not None else now} for r in records]
    mapping = EventMapping(event_type="event_type", value="value", event_id="event_id")
    if not any(r.get("event_id") for r in rows):
        mapping = mapping.model_copy(update={"event_id": None})

    def outcome(res: Any) -> dict[str, Any]:
        return {"inserted": res.inserted, "duplicates": res.duplicates,
                "rejected": [{"index": i, "field": f, "reason": reason} for i, f, reason in res.errors]}

    finish = None if save is None else (lambda conn, res: save(conn, outcome(res)))
    return outcome(append_event_records(engine, rows, mapping, config.event_types, finish=finish))
