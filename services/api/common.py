"""Helpers shared by the blueprints: validation, API keys, access to the runtime."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import current_app, request
from pydantic import BaseModel, ValidationError

from recsys.config import Config
from recsys.ingest.values import RowError, check_text, to_id
from services.errors import ApiError, validation_errors

M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])


def runtime() -> Any:
    return current_app.extensions["recsys"]


def config() -> Config:
    return current_app.extensions["recsys.config"]


def parse_query(model: type[M]) -> M:
    """The query string as ``model``; a parameter given more than once is refused (lists are comma-separated)."""
    for name, values in request.args.lists():
        if len(values) > 1:
            raise ApiError(400, f"query.{name}: given {len(values)} times; give it once "
                                "(lists such as exclude are comma-separated)", f"query.{name}")
    data = {k: request.args.get(k) for k in request.args}
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        raise validation_errors(exc, "query") from None
    _check_k(parsed, "query")
    return parsed


def parse_json(model: type[M]) -> M:
    if not request.is_json:
        raise ApiError(415, f"expected a JSON body (Content-Type: application/json), got {request.mimetype or 'none'!r}")
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(400, "the body is not valid JSON", "body")
    try:
        parsed = model.model_validate(body)
    except ValidationError as exc:
        raise validation_errors(exc, "body") from None
    _check_k(parsed, "body")
    return parsed


def path_id(value: str, name: str) -> str:
    """A path segment that is an id: the ingest's rule (not blank, no NUL bytes, at most 255 characters)."""
    try:
        return to_id(value, name)
    except RowError as err:
        raise ApiError(400, f"path.{name}: {err.reason}", f"path.{name}") from None


def idempotency_key() -> str | None:
    """The ``Idempotency-Key`` header: 1 to 255 printable ASCII characters, or absent."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= 255 or not all(32 < ord(c) < 127 for c in key):
        raise ApiError(400, "header.Idempotency-Key: give 1 to 255 printable ASCII characters without spaces "
                            "(e.g. a UUID), one per batch", "header.Idempotency-Key")
    return check_text(key, "header.Idempotency-Key")


def _check_k(parsed: BaseModel, where: str) -> None:
    k = getattr(parsed, "k", None)
    limit = config().service.max_k
    if k is not None and k > limit:
        raise ApiError(400, f"{where}.k: must be between 1 and {limit} (service.max_k), got {k}", f"{where}.k")


def _key_ok() -> bool:
    given = request.headers.get("X-API-Key") or ""
    auth = request.headers.get("Authorization", "")
    if not given and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if not given:
        return False
    ok = False
    for key in config().service.api_keys:  # compare against every key: time does not depend on which matched
        ok |= hmac.compare_digest(given.encode(), key.encode())
    return ok


def require_key(write: bool) -> Callable[[F], F]:
    """Write endpoints always need a key; reads only when ``service.read_requires_key``."""

    def deco(fn: F) -> F:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            cfg = config().service
            if write or cfg.read_requires_key:
                if not cfg.api_keys:
                    raise ApiError(403, "this endpoint needs an API key, and none is configured (service.api_keys)")
                if not _key_ok():
                    raise ApiError(401, "missing or wrong API key: send it in the X-API-Key header")
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return deco
