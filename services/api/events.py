"""Events: record a batch; the user's next recommendations reflect it (fold-in, no retraining)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from services.api.common import idempotency_key, parse_json, require_key, runtime
from services.errors import ApiError
from services.schemas import EventsBody

bp = Blueprint("events", __name__, url_prefix="/v1/events")


@bp.post("")
@require_key(write=True)
def post_events():  # type: ignore[no-untyped-def]
    body = parse_json(EventsBody)
    key = idempotency_key()
    events = [e.model_dump() for e in body.events]
    result = runtime().record_events(events, key) if key is not None else runtime().record_events(events)
    rejected = result["rejected"]
    if rejected and not (result["inserted"] or result["duplicates"]):
        first = rejected[0]
        field = f"body.events[{first['index']}].{first['field']}" if first["field"] else f"body.events[{first['index']}]"
        raise ApiError(400, f"every event was rejected; first: {field}: {first['reason']}", field, rejected)
    return jsonify(result), (207 if rejected else 200)
