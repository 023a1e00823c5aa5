"""Turning errors into JSON responses. The only place where domain errors get status codes."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from recsys.errors import (
    ArtifactError,
    DatabaseError,
    InputFormatError,
    QueryFieldError,
    RecsysError,
    UnknownIdError,
    UnsupportedQueryError,
)

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A client error with a status code, the offending field and what is allowed."""

    def __init__(self, status: int, message: str, field: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.details = details


def error_body(status: int, message: str, field: str | None = None, details: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"status": status, "message": message}
    if field is not None:
        err["field"] = field
    if details is not None:
        err["details"] = details
    return {"error": err}


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
    @app.errorhandler(ApiError)
    def _api(exc: ApiError):  # type: ignore[no-untyped-def]
        return jsonify(error_body(exc.status, exc.message, exc.field, exc.details)), exc.status

    @app.errorhandler(UnknownIdError)
    def _unknown(exc: UnknownIdError):  # type: ignore[no-untyped-def]
        return jsonify(error_body(404, str(exc))), 404

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
    @app.errorhandler(DatabaseError)
    def _unavailable(exc: RecsysError):  # type: ignore[no-untyped-def]
        log.error("service unavailable: %s", exc)
        return jsonify(error_body(503, str(exc))), 503

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):  # type: ignore[no-untyped-def]
        status = exc.code or 500
        message = exc.description or exc.name
        if status == 413:
            message = f"request body too large; the limit is {app.config.get('MAX_CONTENT_LENGTH')} bytes"
        return jsonify(error_body(status, message)), status

    @app.errorhandler(Exception)
    def _other(exc: Exception):  # type: ignore[no-untyped-def]
        log.exception("unhandled error")
        return jsonify(error_body(500, "internal error; see the service log")), 500
