"""Users: home-feed candidates."""

from __future__ import annotations

from flask import Blueprint, jsonify

from services.api.common import parse_query, path_id, require_key, runtime
from services.api.serialize import ranked_json
from services.api.served import experiment_feed, log_served, new_request_id
from services.errors import ApiError
from services.schemas import RecommendationsQuery

bp = Blueprint("users", __name__, url_prefix="/v1/users")


@bp.get("/<user_id>/recommendations")
@require_key(write=False)
def recommendations(user_id: str):  # type: ignore[no-untyped-def]
    user_id = path_id(user_id, "user_id")
    q = parse_query(RecommendationsQuery)
    rt = runtime()
    request_id = new_request_id()
    served = experiment_feed(rt, user_id, request_id, q)
    if served is not None:  # an experiment's list: logged with its variant (and teams when interleaved)
        versions = {**rt.versions(), "model": served.model_version}  # the variant's model, not the active one
        log_served("feed", user_id, [it.id for it in served.items], versions, experiment=served.experiment,
                   variant=served.variant, teams=served.teams, request_id=request_id)
        return jsonify({"request_id": request_id, "user_id": user_id, "cold_start": served.cold_start,
                        "next_cursor": None, "experiment": served.experiment, "variant": served.variant,
                        **ranked_json(served, versions)})
    try:
        feed = rt.recommend(
            user_id, k=q.k, exclude_seen=q.exclude_seen, category=q.category, exclude=q.exclude,
            diversity=q.diversity, max_per_category=q.max_per_category, cursor=q.cursor,
        )
    except ValueError as exc:  # a malformed or foreign cursor
        raise ApiError(400, f"query.cursor: {exc}", "query.cursor") from None
    versions = rt.versions()
    body = ranked_json(feed, versions)
    log_served("feed", user_id, [it.id for it in feed.items], versions, request_id=request_id)
    return jsonify({"request_id": request_id, "user_id": user_id, "cold_start": feed.cold_start,
                    "next_cursor": feed.next_cursor, **body})
