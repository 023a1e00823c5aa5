"""Which image references may be read: the one place for this policy.

An item's ``image`` is a local path or an ``http(s)`` URL. Both come from outside (an items file, a
``PUT /v1/items`` body), so neither may reach what the server can but should not read:

- **Local files** only under the allowed roots: for ``recsys ingest`` the ingested file's folder, for the
  API ``<data_dir>/images``, plus the folders in ``images.roots``. The path is resolved first
  (``Path.resolve()``: ``..`` and symlinks followed), then it must lie inside a resolved root, so
  ``../../etc/passwd``, an absolute path elsewhere and a symlink pointing out are all refused. Each
  ingested file's folder is recorded in the artifacts registry (:mod:`recsys.store.image_roots`), so the images
  ingested from it stay readable by ``recsys embed``, the service and the web UI later.
- **URLs** only ``http`` and ``https``, to public addresses: the host is resolved and every address it
  resolves to must be public (no loopback, private, link-local, multicast, reserved, unspecified,
  including IPv4 embedded in IPv6); the connection is made to the checked address itself (no second DNS
  lookup that could answer differently); redirects are not followed by the HTTP library but checked
  hop by hop the same way, at most ``images.max_redirects``. Shops whose images sit on a private CDN list
  its hosts in ``images.allowed_hosts`` (``host``, ``host:port`` or ``*.domain``; any address allowed) or
  set ``images.allow_private`` (private ranges allowed for every host; loopback, link-local and the rest
  stay refused). The download itself is in :mod:`recsys.encoders.fetch`.

Callers: :func:`check_reference` when an item is stored (ingest rows, API bodies: a clear per-item
error), :func:`resolve_local_image` / :func:`check_address` when one is read (the embedding job, the
service, the web UI's ``/media/items/<id>``), with the roots of :func:`recsys.store.image_roots.image_roots`.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

from recsys.errors import ImageAccessError

log = logging.getLogger(__name__)

ALLOWED_SCHEMES = ("http", "https")

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_PRIVATE = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class ImagePolicy:
    """What one reader may read (picklable: it travels to the image-decoding worker processes).

    Attributes:
        roots: resolved absolute folders local images may be read from (empty: no local file at all).
        allowed_hosts: lower-case ``host``, ``host:port`` or ``*.domain`` entries whose addresses may be private.
        allow_private: private ranges (RFC 1918, 100.64/10, fc00::/7) allowed for every host.
        max_redirects: redirect hops followed (each one checked).
        timeout_s: overall deadline of one download, seconds (DNS, connect, headers, body, every hop).
        max_bytes: largest download accepted.
    """

    roots: tuple[str, ...] = ()
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)
    allow_private: bool = False
    max_redirects: int = 3
    timeout_s: float = 10.0
    max_bytes: int = 20 * 1024 * 1024

    @property
    def root_paths(self) -> list[Path]:
        return [Path(r) for r in self.roots]


# ---------------------------------------------------------------------------------------------- roots
def unique_roots(paths: Iterable[str | Path]) -> list[Path]:
    """``paths`` resolved (``~``, ``..`` and symlinks followed), each once, in order."""
    out: list[Path] = []
    for p in paths:
        r = Path(p).expanduser().resolve()
        if r not in out:
            out.append(r)
    return out


def resolve_local_image(ref: str | Path, roots: Sequence[str | Path], *, base: str | Path | None = None) -> Path:
    """The resolved path of a local image reference, when it lies under one of ``roots``.

    Args:
        ref: a path; a relative one is taken from ``base`` (default: the first root).
        roots: allowed folders (resolved here too).

    Raises:
        ImageAccessError: ``reason="outside_roots"`` (also for ``..`` or a symlink leading out) or
            ``"no_roots"``. Nothing is opened.
    """
    resolved_roots = unique_roots(roots)
    if not resolved_roots:
        raise ImageAccessError("no_roots", str(ref), "local image files are not allowed here (no image folder configured)")
    text = str(ref)
    if "\x00" in text:
        raise ImageAccessError("outside_roots", text.replace("\x00", "\\0"), "a path cannot contain a NUL character")
    p = Path(text).expanduser() if text.startswith("~") else Path(text)
    if not p.is_absolute():
        p = Path(base if base is not None else resolved_roots[0]) / p
    resolved = p.resolve()
    if any(resolved.is_relative_to(r) for r in resolved_roots):
        return resolved
    log.debug("image %r resolves to %s, outside %s", text, resolved, resolved_roots)
    raise ImageAccessError(
        "outside_roots", text,
        "resolves outside the folders images may be read from (the ingested file's folder, <data_dir>/images, "
        "images.roots); '..', absolute paths elsewhere and symlinks leading out are refused",
    )


# ---------------------------------------------------------------------------------------------- URLs
def is_url(ref: str) -> bool:
    """Whether ``ref`` names a scheme (``http:``, ``file:``, ``s3:``...), i.e. is not a plain path."""
    m = _SCHEME.match(ref)
    return m is not None and len(m.group(1)) > 1  # 'C:' is a drive, not a scheme


@dataclass(frozen=True)
class UrlTarget:
    """One hop's parsed URL: ``host`` as written (lower case), the port, and the request target."""

    scheme: str
    host: str
    port: int
    target: str
    host_header: str


def parse_url(url: str) -> UrlTarget:
    """Split an ``http(s)`` URL. Raises :class:`ImageAccessError` (``scheme``, ``bad_url``)."""
    try:
        parts: SplitResult = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ImageAccessError("bad_url", url, f"not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise ImageAccessError("scheme", url, f"scheme {scheme!r} is not allowed; image URLs must be http or https")
    host = (parts.hostname or "").lower()
    if not host:
        raise ImageAccessError("bad_url", url, "the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise ImageAccessError("bad_url", url, "credentials in image URLs are not allowed")
    port = port or (443 if scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    default = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
    shown = f"[{host}]" if ":" in host else host
    return UrlTarget(scheme, host, port, target, shown if default else f"{shown}:{port}")


def host_allowlisted(host: str, port: int, policy: ImagePolicy) -> bool:
    """``host`` (lower case) is in ``images.allowed_hosts`` as ``host``, ``host:port`` or under ``*.domain``."""
    shown = f"[{host}]" if ":" in host else host
    for entry in policy.allowed_hosts:
        if entry in (host, shown, f"{shown}:{port}"):
            return True
        if entry.startswith("*.") and host.endswith(entry[1:]):
            return True
    return False


def _embedded_v4(addr: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        if addr.sixtofour is not None:
            return addr.sixtofour
        if addr.teredo is not None:
            return addr.teredo[1]
        if addr in _NAT64:
            return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def address_problem(addr: IPAddress, allow_private: bool) -> str | None:
    """Why a connection to ``addr`` is refused (``"loopback"``, ``"private"``...), ``None`` when allowed."""
    inner = _embedded_v4(addr)
    if inner is not None:
        return address_problem(inner, allow_private)
    for kind in ("loopback", "link_local", "multicast", "unspecified", "reserved"):
        if getattr(addr, f"is_{kind}"):
            return kind.replace("_", "-")
    if addr.is_global:
        return None
    if allow_private and any(addr in net for net in _PRIVATE):
        return None
    return "private"


def check_address(addr: IPAddress, url: UrlTarget, policy: ImagePolicy, source: str) -> None:
    """Raise :class:`ImageAccessError` (``address``) unless ``url``'s host may be reached at ``addr``."""
    if host_allowlisted(url.host, url.port, policy):
        return
    problem = address_problem(addr, policy.allow_private)
    if problem is not None:
        raise ImageAccessError(
            "address", source,
            f"{url.host} is a {problem} address ({addr}); image URLs must reach public addresses "
            "(list a private image host in images.allowed_hosts)",
        )


def literal_address(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is one (``127.0.0.1``, ``::1``), else ``None``."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def resolve_checked(url: UrlTarget, policy: ImagePolicy, source: str, timeout: float) -> IPAddress:
    """Resolve ``url``'s host (within ``timeout`` seconds) and check every address it has; returns the one
    to connect to. Raises :class:`ImageAccessError` (``address``, ``dns``)."""
    literal = literal_address(url.host)
    if literal is not None:
        check_address(literal, url, policy, source)
        return literal
    found: list[Any] = []

    def lookup() -> None:
        try:
            found.append(socket.getaddrinfo(url.host, url.port, type=socket.SOCK_STREAM))
        except OSError as exc:
            found.append(exc)

    worker = threading.Thread(target=lookup, name="image-dns", daemon=True)  # getaddrinfo has no timeout
    worker.start()
    worker.join(max(timeout, 0.0))
    if not found:
        raise ImageAccessError("dns", source, f"resolving {url.host} took longer than the deadline")
    if isinstance(found[0], OSError):
        raise ImageAccessError("dns", source, f"cannot resolve {url.host}: {found[0]}")
    addrs = []
    for info in found[0]:
        addr = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if addr not in addrs:
            addrs.append(addr)
    if not addrs:
        raise ImageAccessError("dns", source, f"{url.host} has no address")
    for addr in addrs:  # every address: a host may not mix a public address with a private one
        check_address(addr, url, policy, source)
    return addrs[0]


# ---------------------------------------------------------------------------------------------- storing
def check_reference(ref: str, policy: ImagePolicy, *, base: str | Path | None = None) -> str:
    """The form to store for an item's ``image``, or :class:`ImageAccessError` saying why it is refused.

    A URL must be ``http(s)`` with a host; an IP-literal host is checked at once (a name is checked when
    it is fetched, since its addresses can change). A path must resolve under ``policy.roots`` (relative
    to ``base``, default the first root) and is stored resolved and absolute. Nothing is opened or fetched.
    """
    if is_url(ref):
        url = parse_url(ref)
        literal = literal_address(url.host)
        if literal is not None:
            check_address(literal, url, policy, ref)
        return ref
    return str(resolve_local_image(ref, policy.root_paths, base=base))
