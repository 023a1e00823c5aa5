"""Items: the similar-items widget and upserts."""

from __future__ import annotations

from flask import Blueprint, jsonify

from recsys.errors import ImageAccessError
from services.api.common import parse_json, parse_query, path_id, require_key, runtime
from services.api.serialize import ranked_json
from services.api.served import log_served
from services.errors import ApiError
from services.schemas import ItemIn, ItemsBody, SimilarQuery

bp = Blueprint("items", __name__, url_prefix="/v1/items")


@bp.get("/<item_id>/similar")
@require_key(write=False)
def similar(item_id: str):  # type: ignore[no-untyped-def]
    item_id = path_id(item_id, "item_id")
    q = parse_query(SimilarQuery)
    rt = runtime()
    ranked = rt.similar_items(item_id, k=q.k, category=q.category, exclude=q.exclude, available_only=q.available_only)
    versions = rt.versions()
    request_id = log_served("similar", None, [it.id for it in ranked.items], versions)
    return jsonify({"request_id": request_id, **ranked_json(ranked, versions)})


@bp.put("/<item_id>")
@require_key(write=True)
def put_item(item_id: str):  # type: ignore[no-untyped-def]
    item_id = path_id(item_id, "item_id")
    body = parse_json(ItemIn)
    try:
        result = runtime().upsert_items([{"id": item_id, **body.model_dump()}])
    except ImageAccessError as exc:
        raise _refused(exc, "body.image") from None
    return jsonify(result)


@bp.put("")
@require_key(write=True)
def put_items():  # type: ignore[no-untyped-def]
    body = parse_json(ItemsBody)
    try:
        result = runtime().upsert_items([it.model_dump() for it in body.items])
    except ImageAccessError as exc:
        raise _refused(exc, f"body.{exc.field or 'items'}") from None
    return jsonify(result)


def _refused(exc: ImageAccessError, field: str) -> ApiError:
    """A refused image reference: 400 naming the field, what was wrong and what is allowed."""
    return ApiError(400, f"{field}: {exc.detail}", field, {"reason": exc.reason})
