"""Local HTTP servers for the image-reference tests and the reliability benchmark (127.0.0.1, free port).

:func:`serve` runs a threaded server whose routes are plain functions of the request handler; it counts
the requests per path (``server.hits``), so a test can say that a refused URL was never requested.
Route makers: :func:`image` (a small PNG), :func:`trickle` (a body at one byte a second),
:func:`slow_headers` (the status line and headers at one byte a second), :func:`redirect`, :func:`endless`
(a body without ``Content-Length`` that never ends before the limit).
"""

from __future__ import annotations

import collections
import http.server
import io
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

Route = Callable[[http.server.BaseHTTPRequestHandler, threading.Event], None]


def png_bytes(color: tuple[int, int, int] = (30, 120, 200), size: int = 32) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Server:
    url: str
    port: int
    hits: collections.Counter[str] = field(default_factory=collections.Counter)


@contextmanager
def serve(routes: dict[str, Route], ssl_context: ssl.SSLContext | None = None) -> Iterator[Server]:
    """A threaded HTTP server on 127.0.0.1 (free port) answering ``routes`` (path -> route), 404 otherwise;
    HTTPS with ``ssl_context`` (a server context holding the certificate)."""
    stop = threading.Event()
    hits: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            with lock:
                hits[path] += 1
            route = routes.get(path)
            if route is None:
                self.send_error(404)
                return
            try:
                route(self, stop)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if ssl_context is not None:
        server.socket = ssl_context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = int(server.server_address[1])
    try:
        yield Server(f"{'https' if ssl_context is not None else 'http'}://127.0.0.1:{port}", port, hits)
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


def image(body: bytes | None = None) -> Route:
    data = body if body is not None else png_bytes()

    def route(h: http.server.BaseHTTPRequestHandler, stop: threading.Event) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return route


def trickle(body: bytes | None = None, per_byte_s: float = 1.0) -> Route:
    """200, then ``body`` (default a PNG) one byte every ``per_byte_s`` seconds, without ``Content-Length``."""
    data = body if body is not None else png_bytes()

    def route(h: http.server.BaseHTTPRequestHandler, stop: threading.Event) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.end_headers()
        h.wfile.flush()
        for i in range(len(data)):
            if stop.wait(per_byte_s):
                return
            h.wfile.write(data[i : i + 1])
            h.wfile.flush()

    return route


def slow_headers(n_bytes: int = 30, per_byte_s: float = 1.0) -> Route:
    """A status line and then header bytes at one every ``per_byte_s`` seconds (``n_bytes`` of them)."""

    def route(h: http.server.BaseHTTPRequestHandler, stop: threading.Event) -> None:
        h.wfile.write(b"HTTP/1.0 200 OK\r\n")
        h.wfile.flush()
        header = (b"X-Slow: " + b"a" * n_bytes)[:n_bytes]
        for i in range(len(header)):
            if stop.wait(per_byte_s):
                return
            h.wfile.write(header[i : i + 1])
            h.wfile.flush()

    return route


def redirect(location: str, status: int = 302) -> Route:
    def route(h: http.server.BaseHTTPRequestHandler, stop: threading.Event) -> None:
        h.send_response(status)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


def endless(chunk: int = 16 * 1024, seconds: float = 30.0) -> Route:
    """200 without ``Content-Length``, then bytes as fast as they go, for up to ``seconds``."""

    def route(h: http.server.BaseHTTPRequestHandler, stop: threading.Event) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.end_headers()
        end = time.monotonic() + seconds
        block = b"\0" * chunk
        while not stop.is_set() and time.monotonic() < end:
            h.wfile.write(block)

    return route


def echo_host(body: bytes | None = None) -> Route:
    """Like :func:`image`, and records the ``Host`` header it got in ``route.hosts``."""
    data = body if body is not None else png_bytes()
    hosts: list[str] = []

    def route(h: http.server.BaseHTTPRequestHandler, stop: threading.Event) -> None:
        hosts.append(h.headers.get("Host", ""))
        image(data)(h, stop)

    route.hosts = hosts  # type: ignore[attr-defined]
    return route
