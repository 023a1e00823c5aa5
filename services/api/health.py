"""Liveness, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from recsys import __version__
from services.api.common import runtime
from services.schemas import openapi_spec

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():  # type: ignore[no-untyped-def]
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():  # type: ignore[no-untyped-def]
    ready, checks = runtime().readiness()
    logger = current_app.extensions.get("recsys.impressions")
    if logger is not None:  # this process's impression log (each serving process has its own)
        checks["impressions"] = logger.stats()
    return jsonify({"ready": ready, "checks": checks}), (200 if ready else 503)


@bp.get("/metrics")
def metrics() -> Response:
    m = current_app.extensions["recsys.metrics"]
    m.set_versions(runtime().versions())
    return Response(generate_latest(m.registry), mimetype=CONTENT_TYPE_LATEST)


@bp.get("/openapi.json")
def openapi():  # type: ignore[no-untyped-def]
    return jsonify(openapi_spec(__version__))
