"""Events: record a batch; the user's next recommendations reflect it (fold-in, no retraining)."""

from __future__ import annotations

from flask import Blueprint, jsonify

from services.api.common import parse_json, require_key, runtime
from services.schemas import EventsBody

bp = Blueprint("events", __name__, url_prefix="/v1/events")


@bp.post("")
@require_key(write=True)
def post_events():  # type: ignore[no-untyped-def]
    body = parse_json(EventsBody)
    result = runtime().record_events([e.model_dump() for e in body.events])
    status = 200 if not result["rejected"] else 207 if result["inserted"] or result["duplicates"] else 400
    return jsonify(result), status
