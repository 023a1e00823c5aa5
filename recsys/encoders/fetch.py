"""Downloading one item image under the access policy, with an overall deadline and a size cap.

Each hop: the URL is parsed and checked (:mod:`recsys.encoders.access`), its host resolved and every
address checked, and the connection is made **to the checked address** with urllib3 (the ``Host``
header, TLS SNI and certificate check use the host name), so a DNS answer that changes between the check
and the connection (DNS rebinding) cannot redirect it. Redirects are not followed by urllib3: a 3xx's
``Location`` is the next hop, checked the same way, at most ``policy.max_redirects`` of them.

The deadline covers everything (DNS, connect, TLS, headers, body, every hop): a socket timeout alone
bounds one read, and a server that sends a byte a second never trips it. A watchdog timer shuts the
socket down when the deadline passes, which ends any read in progress. Bodies over ``max_bytes`` are
refused on ``Content-Length`` and while reading; compressed transfer encodings are not asked for.
Proxies from the environment are not used (the policy checks the address actually connected to).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any
from urllib.parse import urljoin

from recsys.encoders.access import ImagePolicy, parse_url, resolve_checked
from recsys.encoders.errors import FETCH_FAILED, ImageLoadError
from recsys.errors import ImageAccessError

log = logging.getLogger(__name__)

REDIRECTS = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "recsys-image-fetch/1"
CHUNK = 64 * 1024


class _Watchdog:
    """Shuts down the sockets registered with it once ``deadline`` (``time.monotonic()``) has passed."""

    def __init__(self, deadline: float) -> None:
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self.expired = False
        self._timer = threading.Timer(max(deadline - time.monotonic(), 0.0), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def register(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
            if self.expired:
                self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._socks:
                self._shut(sock)

    def cancel(self) -> None:
        self._timer.cancel()


def _connection(scheme: str, addr: str, port: int, host: str, timeout: float, watchdog: _Watchdog) -> Any:
    """A urllib3 connection to ``addr`` (the checked IP) speaking for ``host``; its socket is watched."""
    from urllib3.connection import HTTPConnection, HTTPSConnection

    base: type[Any] = HTTPSConnection if scheme == "https" else HTTPConnection

    class Watched(base):  # type: ignore[misc, valid-type]
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            watchdog.register(sock)
            return sock

    if scheme == "https":  # TLS name (SNI) and certificate check are the URL's host, not the address
        return Watched(addr, port, timeout=timeout, server_hostname=host, assert_hostname=host,
                       cert_reqs="CERT_REQUIRED", ca_certs=_ca_file())
    return Watched(addr, port, timeout=timeout)


def _ca_file() -> str:
    """The CA bundle server certificates are checked against (certifi's, as requests uses)."""
    import certifi

    return certifi.where()


def _read_body(resp: Any, source: str, max_bytes: int) -> bytes:
    declared = resp.headers.get("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
        raise ImageLoadError(FETCH_FAILED, source, f"{declared.strip()} bytes is more than the limit of {max_bytes}")
    buf = bytearray()
    while True:
        chunk = resp.read(CHUNK, decode_content=False)
        if not chunk:
            return bytes(buf)
        buf.extend(chunk)
        if len(buf) > max_bytes:
            raise ImageLoadError(FETCH_FAILED, source, f"more than the limit of {max_bytes} bytes")


def _hop(url: str, source: str, policy: ImagePolicy, deadline: float, watchdog: _Watchdog) -> tuple[int, str | None, bytes]:
    """One request: ``(status, location, body)``; the body only for a 200."""
    target = parse_url(url)
    addr = resolve_checked(target, policy, source, deadline - time.monotonic())
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    conn = _connection(target.scheme, str(addr), target.port, target.host, remaining, watchdog)
    try:
        conn.request("GET", target.target, headers={
            "Host": target.host_header, "User-Agent": USER_AGENT, "Accept": "image/*",
            "Accept-Encoding": "identity", "Connection": "close",
        }, preload_content=False, decode_content=False)
        resp = conn.getresponse()
        try:
            if resp.status in REDIRECTS:
                return resp.status, resp.headers.get("Location"), b""
            if resp.status != 200:
                return resp.status, None, b""
            return 200, None, _read_body(resp, source, policy.max_bytes)
        finally:
            resp.release_conn()
            resp.close()
    finally:
        conn.close()


def fetch_url(url: str, policy: ImagePolicy) -> bytes:
    """Download ``url`` under ``policy`` within ``policy.timeout_s`` seconds and ``policy.max_bytes``.

    Raises:
        ImageAccessError: the URL, a redirect target or an address is refused by the policy (nothing read).
        ImageLoadError: ``fetch_failed``: deadline passed, too large, HTTP status, network error,
            too many redirects.
    """
    import urllib3.exceptions

    deadline = time.monotonic() + policy.timeout_s
    watchdog = _Watchdog(deadline)
    current = url
    try:
        for _ in range(policy.max_redirects + 1):
            status, location, body = _hop(current, url, policy, deadline, watchdog)
            if watchdog.expired:  # a read cut short by the watchdog can look like the end of the body
                raise TimeoutError
            if status == 200:
                return body
            if status not in REDIRECTS:
                raise ImageLoadError(FETCH_FAILED, url, f"HTTP status {status}")
            if not location:
                raise ImageLoadError(FETCH_FAILED, url, f"HTTP status {status} without a Location")
            current = urljoin(current, location)
            log.debug("image %s: redirect to %s", url, current)
        raise ImageAccessError("redirects", url, f"more than {policy.max_redirects} redirects (images.max_redirects)")
    except (ImageAccessError, ImageLoadError):
        raise
    except (OSError, urllib3.exceptions.HTTPError, ValueError) as exc:
        if watchdog.expired or time.monotonic() >= deadline:
            raise ImageLoadError(FETCH_FAILED, url, f"not finished within the deadline of {policy.timeout_s:g} s "
                                                    "(encoders.image.fetch_timeout_s)") from None
        raise ImageLoadError(FETCH_FAILED, url, f"{type(exc).__name__}: {exc}") from None
    finally:
        watchdog.cancel()
