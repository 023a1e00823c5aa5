"""Users: home-feed candidates."""

from __future__ import annotations

from flask import Blueprint, jsonify

from services.api.common import parse_query, path_id, require_key, runtime
from services.api.serialize import ranked_json
from services.errors import ApiError
from services.schemas import RecommendationsQuery

bp = Blueprint("users", __name__, url_prefix="/v1/users")


@bp.get("/<user_id>/recommendations")
@require_key(write=False)
def recommendations(user_id: str):  # type: ignore[no-untyped-def]
    user_id = path_id(user_id, "user_id")
    q = parse_query(RecommendationsQuery)
    rt = runtime()
    try:
        feed = rt.recommend(
            user_id, k=q.k, exclude_seen=q.exclude_seen, category=q.category, exclude=q.exclude,
            diversity=q.diversity, max_per_category=q.max_per_category, cursor=q.cursor,
        )
    except ValueError as exc:  # a malformed or foreign cursor
        raise ApiError(400, f"query.cursor: {exc}", "query.cursor") from None
    body = ranked_json(feed, rt.versions())
    return jsonify({"user_id": user_id, "cold_start": feed.cold_start, "next_cursor": feed.next_cursor, **body})
