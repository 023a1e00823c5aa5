"""Multimodal product search: text, image (base64 or multipart upload) or both."""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

from flask import Blueprint, jsonify, request
from pydantic import ValidationError

from recsys.ingest.values import RowError, to_bool
from services.api.common import _check_k, config, parse_json, require_key, runtime
from services.api.serialize import search_json
from services.api.served import experiment_search, log_served, new_request_id
from services.errors import ApiError, validation_errors
from services.schemas import SearchBody

bp = Blueprint("search", __name__, url_prefix="/v1/search")


def decode_image(data: bytes, field: str, max_pixels: int) -> Any:
    """Bytes -> RGB PIL image, refusing non-images and decompression bombs before decoding pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise ApiError(400, f"{field}: image of {w}x{h} pixels is larger than the limit of {max_pixels} pixels", field)
            img.load()
            return img.convert("RGB")
    except ApiError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ApiError(400, f"{field}: not a readable image ({type(exc).__name__}); send a JPEG, PNG, WebP or GIF", field) from None


@bp.post("")
@require_key(write=False)
def search():  # type: ignore[no-untyped-def]
    max_pixels = config().encoders.image.max_pixels
    image = None
    if request.mimetype == "multipart/form-data":
        form = {k: v for k, v in request.form.items()}
        filters = {k: form.pop(k) for k in ("category", "available_only", "price_min", "price_max") if k in form}
        if "available_only" in filters:  # a form field is text: true/false, yes/no, 1/0 as in the query string
            try:
                filters["available_only"] = to_bool(filters["available_only"], "form.available_only", True)
            except RowError as err:
                raise ApiError(400, f"form.available_only: {err.reason}", "form.available_only") from None
        upload = request.files.get("image")
        if upload is not None:
            image = decode_image(upload.read(), "form.image", max_pixels)
        elif request.files:
            raise ApiError(400, f"form: unknown file field(s) {sorted(request.files)}; the upload must be named 'image'", "form")
        try:
            body = SearchBody.model_validate({**form, "filters": filters})
        except ValidationError as exc:
            raise validation_errors(exc, "form") from None
        _check_k(body, "form")
    else:
        body = parse_json(SearchBody)
        if body.image is not None:
            try:
                raw = base64.b64decode(body.image.split(",", 1)[1] if body.image.startswith("data:") else body.image, validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(400, "body.image: malformed base64; send the image bytes base64-encoded (RFC 4648)", "body.image") from None
            image = decode_image(raw, "body.image", max_pixels)
    if body.text is None and image is None:
        raise ApiError(400, "give a text query ('text'), an image ('image'), or both", "body")
    f = body.filters
    rt = runtime()
    query = {"text": body.text, "image": image, "k": body.k, "category": f.category,
             "available_only": f.available_only, "price_min": f.price_min, "price_max": f.price_max,
             "text_weight": body.text_weight, "attributes": f.attributes, "facets": body.facets}
    request_id = new_request_id()
    under = experiment_search(rt, body.user_id, request_id, body.mode, query)
    if under is not None:  # an experiment's answer: logged with its variant (and teams when interleaved)
        ranked, served = under
        versions = rt.versions()
        log_served("search", body.user_id, [it.id for it in served.items], versions, experiment=served.experiment,
                   variant=served.variant, teams=served.teams, request_id=request_id)
        return jsonify({"request_id": request_id, "experiment": served.experiment, "variant": served.variant,
                        **search_json(ranked, versions)})
    ranked = rt.search(user_id=body.user_id, mode=body.mode, **query)
    versions = rt.versions()
    log_served("search", body.user_id, [it.id for it in ranked.items], versions, request_id=request_id)
    return jsonify({"request_id": request_id, **search_json(ranked, versions)})
