"""Telling a database outage from a bug, and logging it without flooding the log.

An outage (connection refused or dropped, the server shutting down, a pool timeout, a SQLite file that
cannot be opened) is a transient state of a dependency, not a bug: the service answers 503 and keeps
serving what it holds in memory. :class:`OutageLog` writes one line per failure kind per interval
(with how many were suppressed), instead of a traceback per request.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

from sqlalchemy import exc as sa_exc

from recsys.errors import DatabaseError, DatabaseUnavailableError

OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    DatabaseError,
)
"""Exceptions that mean "the database is not usable now" (SQLAlchemy wraps the driver's connection errors
as ``OperationalError`` / ``InterfaceError``; ``TimeoutError`` is the pool's)."""


def is_outage(exc: BaseException) -> bool:
    return isinstance(exc, OUTAGE_ERRORS)


def failure_kind(exc: BaseException) -> str:
    """A short, stable name of the failure: the driver's exception class (``OperationalError``,
    ``psycopg.OperationalError``, ...), without the message (which varies per connection)."""
    while exc.__cause__ is not None and getattr(exc, "orig", None) is None:
        exc = exc.__cause__
    orig = getattr(exc, "orig", None)
    inner = type(orig) if orig is not None else type(exc)
    return f"{inner.__module__.split('.')[0]}.{inner.__name__}"


class OutageLog:
    """Logs a failure at most once per ``interval_s`` per ``(dependency, kind)``, with the count since."""

    def __init__(self, logger: logging.Logger, interval_s: float) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def report(self, dependency: str, exc: BaseException) -> bool:
        """Count one failure; returns whether a line was written."""
        key = (dependency, failure_kind(exc))
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        cause = getattr(exc, "orig", None) or exc.__cause__ or exc
        first_line = str(getattr(cause, "orig", None) or cause).strip().splitlines()
        self.logger.error(
            "%s unavailable (%s): %s%s", dependency, key[1], first_line[0] if first_line else "",
            f" [{suppressed} more since the last report]" if suppressed else "",
        )
        return True


@contextlib.contextmanager
def database_errors() -> Iterator[None]:
    """Turn SQLAlchemy's connection failures inside the block into :class:`DatabaseUnavailableError`."""
    try:
        yield
    except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError) as exc:
        raise DatabaseUnavailableError(f"the database is unreachable: {failure_kind(exc)}") from exc
