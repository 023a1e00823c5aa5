"""Event batches written through the service (``POST /v1/events``).

Events are appended idempotently (:func:`recsys.ingest.append_event_records`); the next feed request
reads them. Item upserts (``PUT /v1/items``) are in :mod:`recsys.serving.item_writes`.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine

from recsys.config import Config, EventMapping


def record_events(engine: Engine, config: Config, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Append a batch of events (a missing timestamp is now); bad rows are reported, good ones land."""
    from recsys.ingest import append_event_records

    now = int(time.time())
    rows = [{**r, "timestamp": r.get("timestamp") if r.get("timestamp") is not None else now} for r in records]
    mapping = EventMapping(event_type="event_type", value="value", event_id="event_id")
    if not any(r.get("event_id") for r in rows):
        mapping = mapping.model_copy(update={"event_id": None})
    res = append_event_records(engine, rows, mapping, config.event_types)
    return {
        "inserted": res.inserted,
        "duplicates": res.duplicates,
        "rejected": [{"index": i, "field": f, "reason": reason} for i, f, reason in res.errors],
    }

