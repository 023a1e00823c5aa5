"""Opaque paging cursors for the home feed.

A cursor remembers which items earlier pages returned, so that later pages never repeat them even if
scores moved in between (an event was posted). It is signed (HMAC) so a client cannot forge one that
makes the service do unbounded work, and carries the user id so it cannot be replayed for another user.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import zlib


def encode_cursor(user_id: str, seen: list[int], secret: bytes) -> str:
    payload = zlib.compress(json.dumps({"u": user_id, "s": seen}, separators=(",", ":")).encode())
    mac = hmac.new(secret, payload, hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(mac + payload).decode().rstrip("=")


def decode_cursor(cursor: str, user_id: str, secret: bytes) -> list[int]:
    """The row numbers of items already served. Raises ``ValueError`` for a malformed or foreign cursor."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (ValueError, TypeError):
        raise ValueError("malformed cursor; pass the next_cursor of the previous page unchanged") from None
    mac, payload = raw[:12], raw[12:]
    if len(mac) < 12 or not hmac.compare_digest(mac, hmac.new(secret, payload, hashlib.sha256).digest()[:12]):
        raise ValueError("invalid cursor; pass the next_cursor of the previous page unchanged")
    data = json.loads(zlib.decompress(payload))
    if data.get("u") != user_id:
        raise ValueError("this cursor belongs to another user")
    return [int(x) for x in data.get("s", [])]
