"""Opaque paging cursors for the home feed.

A cursor remembers which items earlier pages returned, so that later pages never repeat them even if
scores moved in between (an event was posted). It is signed (HMAC-SHA256 with ``service.cursor_secret``,
see :mod:`recsys.serving.cursor_secret`) so a client cannot forge one that makes the service do unbounded
work, and carries the user id so it cannot be replayed for another user.

Decoding is bounded before any work: at most :data:`MAX_CURSOR_CHARS` characters of the URL-safe base64
alphabet, the MAC checked before decompressing, at most :data:`MAX_PAYLOAD_BYTES` decompressed, at most
:data:`MAX_SERVED` row numbers, every one a non-negative integer. Anything else is a ``ValueError`` (400).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import zlib

MAC_BYTES = 12
MAX_CURSOR_CHARS = 4096
"""Longer cursors are refused unread (gunicorn's request line is at most 4094 bytes anyway)."""
MAX_PAYLOAD_BYTES = 65536
MAX_SERVED = 10_000
"""Items a cursor may remember: deeper paging than this is refused (start again without a cursor)."""
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")


def encode_cursor(user_id: str, seen: list[int], secret: bytes) -> str:
    payload = zlib.compress(json.dumps({"u": user_id, "s": seen}, separators=(",", ":")).encode())
    mac = hmac.new(secret, payload, hashlib.sha256).digest()[:MAC_BYTES]
    return base64.urlsafe_b64encode(mac + payload).decode().rstrip("=")


def decode_cursor(cursor: str, user_id: str, secret: bytes) -> list[int]:
    """The row numbers of items already served. Raises ``ValueError`` for a malformed, forged, oversized or
    foreign cursor; the message says what to do."""
    again = "pass the next_cursor of the previous page unchanged"
    if len(cursor) > MAX_CURSOR_CHARS:
        raise ValueError(f"cursor of {len(cursor)} characters is longer than the limit of {MAX_CURSOR_CHARS}; {again}")
    if not _ALPHABET.fullmatch(cursor):
        raise ValueError(f"malformed cursor (URL-safe base64 expected); {again}")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (ValueError, binascii.Error):
        raise ValueError(f"malformed cursor; {again}") from None
    mac, payload = raw[:MAC_BYTES], raw[MAC_BYTES:]
    if len(mac) < MAC_BYTES or not hmac.compare_digest(mac, hmac.new(secret, payload, hashlib.sha256).digest()[:MAC_BYTES]):
        raise ValueError(f"invalid cursor; {again}")
    try:
        inflater = zlib.decompressobj()
        text = inflater.decompress(payload, MAX_PAYLOAD_BYTES)
        if inflater.unconsumed_tail:
            raise ValueError("too large")
        data = json.loads(text)
    except (zlib.error, ValueError, UnicodeDecodeError):
        raise ValueError(f"unreadable cursor; {again}") from None
    if not isinstance(data, dict) or not isinstance(data.get("s", []), list):
        raise ValueError(f"invalid cursor content; {again}")
    if data.get("u") != user_id:
        raise ValueError("this cursor belongs to another user")
    served = data.get("s", [])
    if len(served) > MAX_SERVED:
        raise ValueError(f"the cursor remembers more than {MAX_SERVED} items; start again without a cursor")
    if not all(type(x) is int and x >= 0 for x in served):
        raise ValueError(f"invalid cursor content; {again}")
    return served
