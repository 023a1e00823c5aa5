"""What the playground's blueprints share: security headers, the read-key gate, server timing."""

from __future__ import annotations

import time

from flask import Blueprint, Response, g

from services.api.common import config
from services.errors import ApiError

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
"""No inline script or style anywhere; pictures from this origin (and the upload preview's blob: URL)."""


def guard(bp: Blueprint) -> None:
    """Refuse the playground when reads need a key, time the request, and set the security headers."""

    @bp.before_request
    def _gate() -> None:
        g.ui_t0 = time.perf_counter()
        if config().service.read_requires_key:
            raise ApiError(403, "the playground is off: service.read_requires_key is set, and pages cannot send a key "
                                "with every picture; use the JSON API with X-API-Key")

    @bp.after_request
    def _headers(resp: Response) -> Response:
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "same-origin"
        resp.headers["X-Frame-Options"] = "DENY"
        if hasattr(g, "ui_t0"):
            resp.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - g.ui_t0) * 1000:.1f}"
        return resp
