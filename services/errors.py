"""Turning errors into JSON responses. The only place where domain errors get status codes."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from recsys.errors import (
    ArtifactError,
    IdempotencyConflictError,
    InputFormatError,
    QueryFieldError,
    UnknownIdError,
    UnsupportedQueryError,
)
from recsys.store.outage import OUTAGE_ERRORS, OutageLog

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A client error with a status code, the offending field and what is allowed."""

    def __init__(self, status: int, message: str, field: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.details = details


def error_body(status: int, message: str, field: str | None = None, details: Any = None,
               dependency: str | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"status": status, "message": message}
    if field is not None:
        err["field"] = field
    if details is not None:
        err["details"] = details
    if dependency is not None:
        err["dependency"] = dependency
    return {"error": err}


def unavailable(app: Flask, dependency: str, exc: BaseException) -> tuple[Response, int, dict[str, str]]:
    """503 naming the dependency, with ``Retry-After``; logged once per failure kind per interval."""
    app.extensions["recsys.outages"].report(dependency, exc)
    retry = app.extensions["recsys.config"].service.retry_after_s
    message = (f"the {dependency} is unavailable; retry in {retry} s" if dependency == "database"
               else f"the service is not ready ({dependency}): {exc}")
    return jsonify(error_body(503, message, dependency=dependency)), 503, {"Retry-After": str(retry)}


def validation_errors(exc: ValidationError, where: str) -> ApiError:
    """A pydantic error as a 400 naming every bad field (``query.k``, ``body.events[3].timestamp``)."""
    problems = []
    for e in exc.errors():
        loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in e["loc"]).replace(".[", "[")
        field = f"{where}.{loc}" if loc else where
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field; see /openapi.json for the allowed ones"
        problems.append({"field": field, "message": msg})
    first = problems[0]
    return ApiError(400, f"{first['field']}: {first['message']}", first["field"], problems if len(problems) > 1 else None)


def register_error_handlers(app: Flask) -> None:
    interval = app.extensions["recsys.config"].service.outage_log_interval_s
    app.extensions["recsys.outages"] = OutageLog(log, interval)

    @app.errorhandler(ApiError)
    def _api(exc: ApiError):  # type: ignore[no-untyped-def]
        return jsonify(error_body(exc.status, exc.message, exc.field, exc.details)), exc.status

    @app.errorhandler(UnknownIdError)
    def _unknown(exc: UnknownIdError):  # type: ignore[no-untyped-def]
        return jsonify(error_body(404, str(exc))), 404

    @app.errorhandler(IdempotencyConflictError)
    @app.errorhandler(UnsupportedQueryError)
    def _unsupported(exc: UnsupportedQueryError):  # type: ignore[no-untyped-def]
        return jsonify(error_body(422, str(exc))), 422

    @app.errorhandler(QueryFieldError)
    def _query_field(exc: QueryFieldError):  # type: ignore[no-untyped-def]
        field = f"body.{exc.field}"
        return jsonify(error_body(400, f"{field}: {exc}", field)), 400

    @app.errorhandler(InputFormatError)
    def _format(exc: InputFormatError):  # type: ignore[no-untyped-def]
        return jsonify(error_body(400, str(exc))), 400

    @app.errorhandler(ArtifactError)
    def _not_ready(exc: ArtifactError):  # type: ignore[no-untyped-def]
        return unavailable(app, "artifacts", exc)

    for outage in OUTAGE_ERRORS:  # a database outage: 503 + Retry-After, one log line per kind and interval
        app.register_error_handler(outage, lambda exc: unavailable(app, "database", exc))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):  # type: ignore[no-untyped-def]
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            message = f"request body too large; the limit is {app.config.get('MAX_CONTENT_LENGTH')} bytes"
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]  # e.g. Allow of a 405
        return jsonify(error_body(status, message)), status, headers

    @app.errorhandler(Exception)
    def _other(exc: Exception):  # type: ignore[no-untyped-def]
        log.exception("unhandled error")
        return jsonify(error_body(500, "internal error; see the service log")), 500
