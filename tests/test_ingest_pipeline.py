"""BackgroundWriter: order, exact accounting of committed batches, and failures raised in the caller."""

from __future__ import annotations

import threading

import pytest

from recsys.ingest.pipeline import BackgroundWriter


def test_batches_are_written_in_order_and_counted_once() -> None:
    seen: list[int] = []
    with BackgroundWriter(lambda b: seen.append(b) or b * 10) as writer:
        for i in range(50):
            writer.submit(i)
    assert seen == list(range(50))
    assert writer.results == [i * 10 for i in range(50)]


def test_writes_run_on_another_thread_while_the_caller_goes_on() -> None:
    started, release = threading.Event(), threading.Event()
    names: list[str] = []

    def write(b: int) -> int:
        names.append(threading.current_thread().name)
        started.set()
        release.wait(5)
        return b

    with BackgroundWriter(write, name="w") as writer:
        writer.submit(1)
        assert started.wait(5)  # batch 1 is being written ...
        writer.submit(2)  # ... and the caller can hand over the next one meanwhile
        assert writer.results == []  # nothing is counted before its write returned
        release.set()
    assert writer.results == [1, 2] and names == ["w", "w"]


def test_a_failed_write_is_raised_and_later_batches_are_not_written() -> None:
    seen: list[int] = []

    def write(b: int) -> int:
        if b == 3:
            raise ValueError("boom on 3")
        seen.append(b)
        return b

    writer: BackgroundWriter[int, int] = BackgroundWriter(write)
    with pytest.raises(ValueError, match="boom on 3"):
        with writer:
            for i in range(10):
                writer.submit(i)
    assert seen == [0, 1, 2]
    assert writer.results == [0, 1, 2]  # exactly the batches written before the failure
    assert writer.failed


def test_an_error_in_the_caller_still_writes_what_was_submitted() -> None:
    gate = threading.Event()

    def write(b: int) -> int:
        gate.wait(5)
        return b

    writer: BackgroundWriter[int, int] = BackgroundWriter(write, depth=2)
    with pytest.raises(RuntimeError, match="reader broke"):
        with writer:
            writer.submit(1)
            writer.submit(2)
            gate.set()
            raise RuntimeError("reader broke")
    assert writer.results == [1, 2]


def test_interrupt_discards_batches_still_waiting() -> None:
    gate = threading.Event()

    def write(b: int) -> int:
        gate.wait(5)
        return b

    writer: BackgroundWriter[int, int] = BackgroundWriter(write, depth=2)
    with pytest.raises(KeyboardInterrupt):
        with writer:
            writer.submit(1)
            writer.submit(2)
            writer.submit(3)
            threading.Timer(0.2, gate.set).start()
            raise KeyboardInterrupt
    assert writer.results in ([1], [])  # batch 1 may have been in flight; 2 and 3 are dropped
    assert 2 not in writer.results and 3 not in writer.results


def test_submit_after_close_and_bad_depth_are_errors() -> None:
    writer: BackgroundWriter[int, int] = BackgroundWriter(lambda b: b)
    assert writer.close() == []
    with pytest.raises(RuntimeError, match="after close"):
        writer.submit(1)
    with pytest.raises(ValueError, match="depth must be >= 1, got 0"):
        BackgroundWriter(lambda b: b, depth=0)


def test_inline_mode_writes_in_the_callers_thread_with_the_same_accounting() -> None:
    names: list[str] = []

    def write(b: int) -> int:
        names.append(threading.current_thread().name)
        if b == 2:
            raise ValueError("boom on 2")
        return b

    writer: BackgroundWriter[int, int] = BackgroundWriter(write, background=False)
    with pytest.raises(ValueError, match="boom on 2"):
        with writer:
            for i in range(5):
                writer.submit(i)
    assert writer.results == [0, 1] and writer.failed
    assert names == [threading.current_thread().name] * 3
