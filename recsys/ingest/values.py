"""Converting raw cell values (CSV strings, JSON values, Parquet scalars) into typed fields.

Every converter raises :class:`RowError` naming the field and saying what is allowed; the ingest
loop turns that into a reject-file entry.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

_TRUE = frozenset({"1", "true", "t", "yes", "y"})
MAX_TIMESTAMP = 253_402_300_799
"""The last second of the year 9999 (UTC): event times must lie in ``[0, MAX_TIMESTAMP]``."""
_FALSE = frozenset({"0", "false", "f", "no", "n"})


class RowError(Exception):
    """One row is bad: ``field`` names the column, ``reason`` says what is wrong and what is allowed."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "") or (
        isinstance(value, float) and math.isnan(value)
    )


def check_text(value: str, field: str | None) -> str:
    """``value`` unchanged, or a :class:`RowError` when it holds a NUL byte (no database stores one in
    a text column: PostgreSQL refuses it). The one check the ingest and the API share."""
    if "\x00" in value:
        raise RowError(field, f"contains a NUL byte (\\x00) at position {value.index(chr(0))}; text may not contain NUL")
    return value


def check_cells(row: dict[str, Any]) -> None:
    """A :class:`RowError` naming the first column whose text holds a NUL byte (see :func:`check_text`)."""
    for column, value in row.items():
        if isinstance(value, str):
            check_text(value, str(column))


def to_id(value: Any, field: str) -> str:
    """An external id: a non-empty string (integers are written in decimal, leading zeros of strings kept),
    surrounding blanks stripped, without NUL bytes, at most 255 characters."""
    if is_missing(value):
        raise RowError(field, "missing id; every row needs a non-empty id")
    if isinstance(value, bool):
        raise RowError(field, f"an id must be a string or an integer, got boolean {value!r}")
    if isinstance(value, str):
        out = value.strip()
    elif isinstance(value, int):
        out = str(value)
    elif isinstance(value, float) and value.is_integer():
        out = str(int(value))
    else:
        raise RowError(field, f"an id must be a string or an integer, got {type(value).__name__} {value!r}")
    if len(out) > 255:
        raise RowError(field, f"an id may have at most 255 characters, got {len(out)}")
    return check_text(out, field)


def to_text(value: Any) -> str:
    if is_missing(value):
        return ""
    return value.strip() if isinstance(value, str) else str(value)


def to_float(value: Any, field: str) -> float | None:
    """A number or an empty cell (``None``); anything else is a :class:`RowError`."""
    if is_missing(value):
        return None
    if isinstance(value, bool):
        raise RowError(field, f"expected a number, got boolean {value!r}")
    if isinstance(value, (int, float)):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value)
        except ValueError:
            raise RowError(field, f"expected a number, got {value!r}") from None
    else:
        raise RowError(field, f"expected a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(out):
        raise RowError(field, f"expected a finite number, got {value!r}")
    return out


def to_bool(value: Any, field: str, default: bool) -> bool:
    if is_missing(value):
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    raise RowError(field, f"expected a boolean (true/false, yes/no, 1/0), got {value!r}")


class TimestampParser:
    """Turns a timestamp cell into integer unix seconds (UTC).

    Accepted: integers or numeric strings (unix seconds, as MovieLens), ISO 8601 dates
    (``2020-09-22``, as H&M: midnight UTC) and date-times (``2020-09-22T10:00:00+02:00``; without an
    offset they are taken as UTC), and ``datetime``/``date`` values from Parquet. Parsed strings are
    cached, since event logs repeat dates a lot.
    """

    def __init__(self, field: str) -> None:
        self.field = field
        self._cache: dict[str, int] = {}

    def __call__(self, value: Any) -> int:
        if isinstance(value, str):
            hit = self._cache.get(value)
            if hit is not None:
                return hit
            out = self._in_range(self._parse_str(value))
            if len(self._cache) < 1_000_000:
                self._cache[value] = out
            return out
        if is_missing(value):
            raise RowError(self.field, "missing timestamp; expected unix seconds or an ISO 8601 date/time")
        if isinstance(value, bool):
            raise RowError(self.field, f"expected unix seconds or an ISO 8601 date/time, got boolean {value!r}")
        if isinstance(value, (int, float)):
            if not math.isfinite(value):
                raise RowError(self.field, f"expected unix seconds, got {value!r}")
            return self._in_range(int(value))
        if isinstance(value, dt.datetime):
            return self._in_range(_epoch(value))
        if isinstance(value, dt.date):
            return self._in_range(_epoch(dt.datetime(value.year, value.month, value.day)))
        raise RowError(self.field, f"expected unix seconds or an ISO 8601 date/time, got {type(value).__name__} {value!r}")

    def _in_range(self, ts: int) -> int:
        if not 0 <= ts <= MAX_TIMESTAMP:
            raise RowError(self.field, f"a timestamp must lie between 0 (1970-01-01) and {MAX_TIMESTAMP} (9999-12-31), got {ts}")
        return ts

    def _parse_str(self, value: str) -> int:
        text = value.strip()
        if not text:
            raise RowError(self.field, "missing timestamp; expected unix seconds or an ISO 8601 date/time")
        if text.lstrip("-").isdigit():
            return int(text)
        try:
            return _epoch(dt.datetime.fromisoformat(text))
        except ValueError:
            pass
        try:
            return int(float(text))
        except (ValueError, OverflowError):
            raise RowError(
                self.field, f"cannot parse {value!r} as a timestamp; expected unix seconds or an ISO 8601 date/time"
            ) from None


def _epoch(value: dt.datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return int(value.timestamp())
