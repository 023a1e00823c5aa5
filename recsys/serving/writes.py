"""Writes through the service: event batches and item upserts.

Events are appended idempotently (:func:`recsys.ingest.append_event_records`); the next feed request
reads them. Items are stored, the new or changed ones embedded at once, and the catalogue stamp moved so
that every serving process reloads (the indexes take the new rows into their side buffers).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from recsys.config import Config, EventMapping
from recsys.serving.state import CATALOGUE


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


def upsert_items(engine: Engine, config: Config, items: list[dict[str, Any]], *, text_encoder: Callable[[], Any],
                 image_encoder: Callable[[], Any], reload: Callable[[float], bool]) -> dict[str, Any]:
    """Store the items, embed the new or changed ones at once, and make them servable.

    Args:
        text_encoder, image_encoder: build (or return) the encoders, called only when needed.
        reload: requests this process's reload and waits for it up to the given seconds; returns whether
            it finished (``servable``).
    """
    from recsys.embed import run_embed
    from recsys.ingest.items import upsert_item_records
    from recsys.store.artifacts import register_artifact

    report, changed = upsert_item_records(engine, items)
    embedded = 0
    servable = True
    if changed:
        with_image = {it["id"] for it in items if it.get("image")} & set(changed)
        rep = run_embed(
            engine, config.encoders, text_encoder=text_encoder(),
            image_encoder=image_encoder() if with_image else None,
        )
        embedded = sum(sp.embedded for sp in rep.spaces)
        register_artifact(engine, CATALOGUE, "api", None,
                          metrics={"stamp": uuid.uuid4().hex, "changed_items": len(changed)})
        servable = reload(config.service.upsert_wait_s)
    return {"inserted": report.inserted, "updated": report.updated, "unchanged": report.unchanged,
            "embedded": embedded, "servable": servable}
