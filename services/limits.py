"""The body-size limit for bodies without a ``Content-Length`` (``Transfer-Encoding: chunked``).

Werkzeug enforces ``MAX_CONTENT_LENGTH`` on a declared length with a 413, but silently truncates a chunked
body at the limit, so the truncated JSON was answered 400. :class:`ChunkedBodyLimit` (WSGI middleware)
reads such a body up to one byte past the limit: over it, the request is marked and answered 413 by the
app; within it, the body is handed on with its length set, as if it had been declared.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from typing import Any

TOO_LARGE = "recsys.body_too_large"
"""WSGI environ key set when a chunked body exceeded the limit (the app answers 413)."""


class ChunkedBodyLimit:
    def __init__(self, app: Callable[..., Iterable[bytes]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked and not environ.get("CONTENT_LENGTH"):
            stream = environ["wsgi.input"]
            data = bytearray()
            while len(data) <= self.max_bytes:
                part = stream.read(min(65536, self.max_bytes + 1 - len(data)))
                if not part:
                    break
                data += part
            if len(data) > self.max_bytes:
                environ[TOO_LARGE] = True
                data = bytearray()
            environ["wsgi.input"] = io.BytesIO(bytes(data))
            environ["CONTENT_LENGTH"] = str(len(data))
            environ["wsgi.input_terminated"] = False
        return self.app(environ, start_response)
