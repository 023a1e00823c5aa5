"""Overlap parsing and writing: one background thread writes the chunks the caller parses.

A bulk load alternates client work (read, validate, build keys: Python, holding the GIL) and server
work (``COPY`` / ``INSERT``: the database, while the driver waits on its socket with the GIL released).
:class:`BackgroundWriter` runs the writes on one worker thread, in submission order, so that chunk
``N + 1`` is parsed while chunk ``N`` is written: on two cores the client and the server run at once.

Accounting stays exact: a chunk's result is recorded only once ``write`` has returned, i.e. once its
transaction has committed. After a failed write no later chunk is written (they are discarded), and
the failure is raised in the caller's thread by the next :meth:`~BackgroundWriter.submit` or by
:meth:`~BackgroundWriter.close`; :attr:`~BackgroundWriter.results` then holds exactly the chunks that
were committed before it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_STOP = object()


class BackgroundWriter(Generic[T, R]):
    """Calls ``write(batch)`` for every submitted batch, in order, on one worker thread.

    Use as a context manager; the body submits batches, :meth:`close` (or leaving the block) waits
    for the last one::

        with BackgroundWriter(write_chunk) as writer:
            for chunk in chunks:
                writer.submit(parse(chunk))
        committed = writer.results

    Leaving the block because of an exception still writes the batches already submitted (the same
    state a sequential loop would have reached), then lets the exception through; a
    ``KeyboardInterrupt`` (or any other non-``Exception``) discards them instead.

    Args:
        write: writes one batch and returns its result; must commit its own transaction.
        depth: batches that may wait for the worker (besides the one being written); bounds memory.
        background: ``False`` writes each batch inline in :meth:`submit`, with the same accounting and
            errors (for resources that cannot cross threads, e.g. an in-memory SQLite database, whose
            connections are per thread).
    """

    def __init__(
        self, write: Callable[[T], R], *, depth: int = 1, name: str = "recsys-writer", background: bool = True
    ) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth!r}")
        self._write = write
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._abort = threading.Event()
        self._error: BaseException | None = None
        self._closed = False
        self.results: list[R] = []
        """One result per committed batch, in submission order."""
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._error is not None or self._abort.is_set():
                continue  # keep draining so that submit() never blocks on a dead writer
            try:
                result = self._write(item)  # type: ignore[arg-type]
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, re-raised there
                self._error = exc
            else:
                self.results.append(result)

    @property
    def failed(self) -> bool:
        """True once a write has raised (the error is raised by the next submit or close)."""
        return self._error is not None

    def submit(self, batch: T) -> None:
        """Queue ``batch`` for writing; blocks while ``depth`` batches are already waiting.

        Raises:
            The exception of an earlier failed write, unchanged.
            RuntimeError: after :meth:`close`.
        """
        if self._closed:
            raise RuntimeError("submit() after close()")
        self._raise_error()
        if self._thread is None:
            try:
                self.results.append(self._write(batch))
            except BaseException as exc:
                self._error = exc
                raise
            return
        self._queue.put(batch)

    def close(self) -> list[R]:
        """Wait until every submitted batch is written; returns :attr:`results`.

        Raises:
            The exception of a failed write, unchanged.
        """
        self._finish()
        self._raise_error()
        return self.results

    def _finish(self) -> None:
        if self._thread is None:
            self._closed = True
            return
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def __enter__(self) -> BackgroundWriter[T, R]:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if et is None:
            self.close()
            return
        if not issubclass(et, Exception):
            self._abort.set()
        self._finish()  # the caller's exception propagates; a write error, if any, stays in .failed
