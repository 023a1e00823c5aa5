"""``GET /media/items/<id>?size=N``: an item's stored picture as a cached JPEG thumbnail, else a placeholder.

The path opened is the one stored for the item (never taken from the request) and must resolve inside the
allowed image roots (:func:`recsys.serving.media.local_source`). Items without a picture, with a remote (URL)
picture -- not fetched by the service -- or with one that cannot be read get the placeholder SVG.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, current_app, request, send_file

from recsys.serving.browse import item_image_ref
from recsys.encoders.access import is_url
from recsys.serving.media import PLACEHOLDER_SVG, SIZES, local_source, thumbnail
from recsys.store.image_roots import image_roots
from services.api.common import config
from services.errors import ApiError
from services.ui.common import guard

bp = Blueprint("media", __name__, url_prefix="/media")
guard(bp)

THUMB_MAX_AGE = 86_400
"""Thumbnails are named by their source's size and time, so they may be cached for a day."""
PLACEHOLDER_MAX_AGE = 300
"""The placeholder is cached briefly: the item may get a picture."""


def _size() -> int:
    raw = request.args.get("size", "320")
    if not raw.isdigit() or int(raw) not in SIZES:
        raise ApiError(400, f"query.size: must be one of {list(SIZES)}, got {raw[:20]!r}", "query.size")
    return int(raw)


def _placeholder() -> Response:
    resp = Response(PLACEHOLDER_SVG, mimetype="image/svg+xml")
    resp.headers["Cache-Control"] = f"public, max-age={PLACEHOLDER_MAX_AGE}"
    resp.set_etag("placeholder-1")
    return resp.make_conditional(request)


@bp.get("/items/<item_id>")
def item_image(item_id: str) -> Response:
    size = _size()
    cfg = config()
    engine = current_app.extensions["recsys"].engine
    found, ref = item_image_ref(engine, item_id)
    if not found:
        raise ApiError(404, f"unknown item id {item_id[:255]!r}")
    if not ref or is_url(ref):
        return _placeholder()
    source = local_source(ref, image_roots(cfg, engine))
    if source is None:
        current_app.logger.warning("media: item %r: stored image is missing or outside the image roots", item_id)
        return _placeholder()
    # absolute: Flask resolves a relative send_file path against the package, not the working directory
    thumb = thumbnail(source, size, Path(cfg.data_dir).resolve() / "cache" / "thumbs", cfg.encoders.image.max_pixels)
    if thumb is None:
        return _placeholder()
    resp = send_file(thumb.path, mimetype="image/jpeg", etag=thumb.etag, conditional=True, max_age=THUMB_MAX_AGE)
    resp.headers["Cache-Control"] = f"public, max-age={THUMB_MAX_AGE}"
    return resp
