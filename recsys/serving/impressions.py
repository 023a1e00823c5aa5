"""Impression logging: every served list goes to SQL without the request waiting for the database.

:class:`ImpressionLog` takes a list in :meth:`~ImpressionLog.log` (called by the route before it answers),
appends it to a per-process **spool file** (one ``write`` call: the bytes are in the kernel's page cache
before the answer leaves, so they outlive a killed process) and to a **bounded in-process queue**. A
background thread takes up to ``batch_size`` lists from the queue and writes them in one transaction
(``impressions`` + ``impression_items``). The queue is bounded by count (``queue_size``) and by the lists'
estimated memory (``queue_bytes``, :func:`record_bytes`); a list that does not fit is dropped and counted; a batch
the database refuses after a few retries is dropped and counted too. So every list of an answered request
is either in SQL, still queued (written soon, or at a clean exit: :meth:`~ImpressionLog.close`, run by
``atexit`` and gunicorn's ``worker_exit`` hook), or counted in ``dropped``.

A process killed before its writer committed leaves its spool behind; the next process to start (and the
writers, every ``RECOVER_EVERY_S``) takes the spools whose process (the pid in the file name) is gone and inserts their lists, skipping request ids already present, then deletes them. A spool is truncated
whenever everything appended to it has been written or dropped, so it stays small.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, delete, insert, select

from recsys.experiments.settings import ImpressionsConfig
from recsys.store.models import Impression, ImpressionItem

log = logging.getLogger(__name__)

RETRIES = (0.2, 1.0, 3.0)
"""Pauses (seconds) between the attempts to write one batch before it is dropped."""
RECOVER_EVERY_S = 30.0
PRUNE_EVERY_S = 3600.0


def new_request_id() -> str:
    """A fresh request id: 32 hex digits (uuid4)."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class ImpressionRecord:
    """One served list. ``items``: external item ids in served order (position = index);
    ``teams``: per position, the variant credited with the item (interleaving), else ``None``."""

    request_id: str
    surface: str
    user_id: str | None
    items: tuple[str, ...]
    teams: tuple[str | None, ...] | None = None
    experiment: str | None = None
    variant: str | None = None
    model_version: str | None = None
    index_version: str | None = None
    ts_ms: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImpressionRecord:
        teams = data.get("teams")
        return cls(**{**data, "items": tuple(data["items"]), "teams": tuple(teams) if teams is not None else None})


ITEM_BYTES = 57
"""Heap bytes per item id beyond its characters: a compact ASCII ``str`` (49) plus its tuple slot (8)."""
RECORD_BYTES = 600
"""Heap bytes of one record beyond its item ids: the dataclass, its strings and its queue slot."""


def record_bytes(record: ImpressionRecord) -> int:
    """Estimated Python heap bytes a queued list holds (item ids, their tuple, team slots, the record).

    Arithmetic on lengths, not ``sys.getsizeof`` per object: it runs on the request's path."""
    n = len(record.items)
    return RECORD_BYTES + ITEM_BYTES * n + sum(map(len, record.items)) + (8 * n if record.teams else 0)


def _rows(records: Sequence[ImpressionRecord]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    heads, items = [], []
    for r in records:
        heads.append({"request_id": r.request_id, "surface": r.surface, "user_id": r.user_id,
                      "experiment": r.experiment, "variant": r.variant, "model_version": r.model_version,
                      "index_version": r.index_version, "ts_ms": r.ts_ms})
        teams = r.teams or (None,) * len(r.items)
        items.extend({"request_id": r.request_id, "position": p, "item_id": it, "team": t}
                     for p, (it, t) in enumerate(zip(r.items, teams)))
    return heads, items


def _insert_ignore(conn: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert rows, skipping primary keys already present (a recovered spool may repeat written lists)."""
    if not rows:
        return
    name = conn.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        conn.execute(pg_insert(table).on_conflict_do_nothing(), rows)
    elif name == "sqlite":
        conn.execute(insert(table).prefix_with("OR IGNORE"), rows)
    else:  # pragma: no cover - other backends: plain insert (request ids are fresh uuids)
        conn.execute(insert(table), rows)


def write_impressions(engine: Engine, records: Sequence[ImpressionRecord]) -> None:
    """Write lists in one transaction (lists already present are skipped)."""
    heads, items = _rows(records)
    with engine.begin() as conn:
        _insert_ignore(conn, Impression.__table__, heads)
        _insert_ignore(conn, ImpressionItem.__table__, items)


def prune_impressions(engine: Engine, retention_days: float, now_ms: int | None = None) -> int:
    """Delete lists older than ``retention_days`` (and their positions). Returns how many lists went."""
    cutoff = (now_ms if now_ms is not None else int(time.time() * 1000)) - int(retention_days * 86_400_000)
    old = select(Impression.request_id).where(Impression.ts_ms < cutoff)
    with engine.begin() as conn:
        conn.execute(delete(ImpressionItem).where(ImpressionItem.request_id.in_(old)))
        gone = conn.execute(delete(Impression).where(Impression.ts_ms < cutoff)).rowcount
    return max(int(gone or 0), 0)


def read_spool(path: Path) -> list[ImpressionRecord]:
    """The complete lines of a spool (a torn last line, written by a process killed mid-write, was never
    answered and is skipped)."""
    out = []
    for line in path.read_bytes().split(b"\n"):
        if not line:
            continue
        try:
            out.append(ImpressionRecord.from_json(orjson.loads(line)))
        except (orjson.JSONDecodeError, TypeError, KeyError):
            log.warning("impressions: skipping a torn line in %s", path)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _owner(path: Path) -> int | None:
    """The pid in a spool's name (``<pid>-<token>.spool`` or ``....spool.recovering-<pid>``)."""
    try:
        return int(path.name.rsplit("-", 1)[1]) if ".recovering-" in path.name else int(path.name.split("-", 1)[0])
    except (IndexError, ValueError):
        return None


def recover_spools(engine: Engine, spool_dir: Path, own: Path | None = None) -> int:
    """Insert the lists of spools left by dead processes, then delete them. Returns the lines read
    (lists already written are skipped by request id).

    A spool belongs to the process whose pid starts its name; it is taken once that pid is gone, by
    renaming it (atomic: one recoverer wins) to ``*.recovering-<my pid>``; a recoverer that dies halfway
    leaves that name, taken again the same way."""
    recovered = 0
    for path in sorted([*spool_dir.glob("*.spool"), *spool_dir.glob("*.spool.recovering-*")]):
        pid = _owner(path)
        if (own is not None and path == own) or pid is None or pid == os.getpid() or _alive(pid):
            continue
        base = path.name.split(".recovering-")[0]
        mine = spool_dir / f"{base}.recovering-{os.getpid()}"
        try:
            os.rename(path, mine)
        except FileNotFoundError:  # another process took it first
            continue
        records = read_spool(mine)
        for start in range(0, len(records), 1000):
            write_impressions(engine, records[start : start + 1000])
        mine.unlink()
        recovered += len(records)
    if recovered:
        log.info("impressions: recovered %d lists from spools of stopped processes", recovered)
    return recovered


_LIVE: weakref.WeakSet[ImpressionLog] = weakref.WeakSet()
"""Loggers that :func:`close_all` closes at interpreter exit (those made with ``register_atexit``)."""


def live_logs() -> list[ImpressionLog]:
    """The loggers not closed yet that :func:`close_all` will close at exit."""
    return [lg for lg in list(_LIVE) if not lg._closed]


def close_all(timeout: float = 30.0) -> None:
    """Close every live logger (registered with ``atexit``): queued lists are written before the exit."""
    for logger in live_logs():
        logger.close(timeout)


atexit.register(close_all)


class ImpressionLog:
    """The per-process logger: bounded queue, background batch writer, spool file. Thread-safe."""

    def __init__(self, engine: Engine, config: ImpressionsConfig, spool_dir: Path | None = None,
                 *, register_atexit: bool = True) -> None:
        self.engine = engine
        self.config = config
        self._spool_root = spool_dir if config.spool else None
        self._start()
        if register_atexit:
            _LIVE.add(self)

    def _start(self) -> None:
        """A fresh queue, counters, spool file (named with this process's pid) and writer thread."""
        self._queue: queue.Queue[tuple[ImpressionRecord, int] | None] = queue.Queue(maxsize=self.config.queue_size)
        self._queued_bytes = 0  # record_bytes of the lists in the queue (under the lock)
        self._lock = threading.Lock()  # spool appends, truncation and the counters
        self.logged = 0
        self.written = 0
        self.dropped = 0
        self.recovered = 0
        self._failed = 0  # accepted lists the writer gave up on (also in ``dropped``)
        self._closed = False
        self._spool_fd: int | None = None
        self.spool_path: Path | None = None
        self.spool_dir: Path | None = self._spool_root
        if self._spool_root is not None:
            self._spool_root.mkdir(parents=True, exist_ok=True)
            self.spool_path = self._spool_root / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.spool"
            self._spool_fd = os.open(self.spool_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._thread = threading.Thread(target=self._run, name="impression-writer", daemon=True)
        self._thread.start()

    def reopen(self) -> None:
        """Start again in this process after a ``fork`` (gunicorn's preloaded app, ``services/gunicorn_conf.py``).

        The parent :meth:`close`\ s its logger before it forks (a writer thread does not survive a ``fork``, and
        a spool file must belong to one process); each child then gets its own queue, counters, spool file and
        writer thread, which first recovers the spools of stopped processes.

        Raises:
            RuntimeError: the logger is not closed (reopening a running one would lose its queue).
        """
        if not self._closed:
            raise RuntimeError("reopen() restarts a closed impression log (closed before the fork); this one is running")
        self._start()

    # ------------------------------------------------------------------ the request's side
    def log(self, record: ImpressionRecord) -> bool:
        """Queue one list (never blocks on the database). False: dropped (queue full by count or bytes, or
        closed) and counted."""
        size = record_bytes(record)
        line = orjson.dumps(asdict(record)) + b"\n" if self._spool_fd is not None else b""
        with self._lock:
            # only log() puts, under this lock: the checks hold until the put
            if self._closed or self._queue.full() or self._queued_bytes + size > self.config.queue_bytes:
                self.dropped += 1
                return False
            if self._spool_fd is not None:
                os.write(self._spool_fd, line)
            self._queue.put_nowait((record, size))
            self._queued_bytes += size
            self.logged += 1
        return True

    def stats(self) -> dict[str, int]:
        """``logged`` (accepted), ``written``, ``dropped``, ``queued`` (accepted, not yet written),
        ``queued_bytes`` (estimated memory of the lists still in the queue), ``recovered``."""
        with self._lock:
            return {"logged": self.logged, "written": self.written, "dropped": self.dropped,
                    "queued": self.logged - self.written - self._failed, "queued_bytes": self._queued_bytes,
                    "recovered": self.recovered}

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every accepted list is written or dropped. False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.written + self._failed >= self.logged:
                    return True
            time.sleep(0.01)
        return False

    def close(self, timeout: float = 30.0) -> None:
        """Stop accepting lists, write what is queued, stop the writer (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("impressions: the writer did not finish within %.0f s; %d lists stay in the spool",
                        timeout, self._queue.qsize())
            return
        if self._spool_fd is not None:
            with self._lock:
                done = self.written + self._failed >= self.logged
            os.close(self._spool_fd)
            self._spool_fd = None
            if done and self.spool_path is not None:
                self.spool_path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ the writer
    def _take(self) -> tuple[list[ImpressionRecord], bool]:
        """Up to ``batch_size`` lists (waiting at most the flush interval for the first); True: stop after."""
        batch: list[ImpressionRecord] = []
        stop = False
        try:
            first = self._queue.get(timeout=self.config.flush_interval_s)
        except queue.Empty:
            return batch, False
        taken = [first]
        while first is not None and len(taken) < self.config.batch_size:
            try:
                nxt = self._queue.get_nowait()
            except queue.Empty:
                break
            taken.append(nxt)
            if nxt is None:
                break
        freed = 0
        for entry in taken:
            if entry is None:
                stop = True
            else:
                batch.append(entry[0])
                freed += entry[1]
        with self._lock:  # the batch's memory is the writer's now (bounded by batch_size)
            self._queued_bytes -= freed
        return batch, stop

    def _write(self, batch: list[ImpressionRecord]) -> None:
        for attempt, pause in enumerate((*RETRIES, None)):
            try:
                write_impressions(self.engine, batch)
            except Exception as exc:  # noqa: BLE001 - a database outage must not kill the writer
                if pause is None:
                    log.error("impressions: dropping %d lists after %d attempts: %s", len(batch), attempt + 1, exc)
                    with self._lock:
                        self.dropped += len(batch)
                        self._failed += len(batch)
                    return
                time.sleep(pause)
            else:
                with self._lock:
                    self.written += len(batch)
                return

    def _truncate_if_done(self) -> None:
        with self._lock:
            if self._spool_fd is not None and self.written + self._failed >= self.logged:
                os.ftruncate(self._spool_fd, 0)

    def _housekeeping(self, last: dict[str, float]) -> None:
        now = time.monotonic()
        if self.spool_dir is not None and now - last["recover"] >= RECOVER_EVERY_S:
            last["recover"] = now
            try:
                n = recover_spools(self.engine, self.spool_dir, own=self.spool_path)
                with self._lock:
                    self.recovered += n
            except Exception as exc:  # noqa: BLE001 - retried later
                log.warning("impressions: spool recovery failed: %s", exc)
        if now - last["prune"] >= PRUNE_EVERY_S:
            last["prune"] = now
            try:
                prune_impressions(self.engine, self.config.retention_days)
            except Exception as exc:  # noqa: BLE001 - retried later
                log.warning("impressions: pruning failed: %s", exc)

    def _run(self) -> None:
        last = {"recover": -RECOVER_EVERY_S, "prune": time.monotonic() - PRUNE_EVERY_S + 60.0}
        stop = False
        while not stop:
            batch, stop = self._take()
            if batch:
                self._write(batch)
                if self._queue.empty():
                    self._truncate_if_done()
            if not stop:
                self._housekeeping(last)


def items_of(ranked_items: Iterable[Any]) -> tuple[str, ...]:
    """External ids of a ranked answer's items (anything with ``.id``)."""
    return tuple(str(it.id) for it in ranked_items)
