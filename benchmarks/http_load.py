"""A small, cheap HTTP load generator for the benchmarks, plus a gunicorn server helper.

Two modes, both over plain TCP sockets speaking HTTP/1.1 ``GET`` (a few dozen lines of parsing instead of
``http.client``, which costs about twice the client CPU per request: 85-95 vs 180 us including the TCP
connect, measured against gunicorn on the development machine; the client shares the machine with the
server, so every microsecond it spends is taken from the server):

- :func:`open_loop`: requests are *scheduled* at a fixed rate (``t0 + i / rate``) and handed to a pool of
  connection threads; each latency is measured from the request's scheduled send time, not from when a
  thread got round to sending it. A server that stalls therefore shows its full queueing delay
  (no coordinated omission, as in wrk2).
- :func:`closed_loop`: ``concurrency`` threads each send the next request as soon as the previous one is
  answered: the maximum throughput the server sustains.

Connections are kept alive when the server allows it; gunicorn's default ``sync`` worker answers every
request with ``Connection: close``, so against it each request opens a new TCP connection (counted in
``connects``), exactly as a real client of that deployment would.

URLs come from ``paths``: a sequence of paths (used round-robin) or a function of the request number, so
load can be spread over many item or user ids.

    from benchmarks.http_load import open_loop, closed_loop
    res = open_loop("http://127.0.0.1:8000", [f"/v1/items/{i}/similar?k=10" for i in ids], rate=200, duration_s=10)
    print(res.summary())
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

Paths = Sequence[str] | Callable[[int], str]
"""Request paths: a sequence used round-robin, or ``f(i) -> path`` for request number ``i``."""

SERVICE_GUNICORN_ARGS: tuple[str, ...] = ("-c", "python:services.gunicorn_conf", "-w", "4")
"""The production command's settings (README, "The service"): the service's gunicorn config (the app preloaded
in the master and the workers forked from it, sharing its memory; fork hooks) and 4 workers of gunicorn's
default ``sync`` class, one thread each. Both the service and the bare-Flask baseline are served with these
(:func:`gunicorn_server` puts the repository on the server's ``PYTHONPATH`` so that the config is found)."""
REPO_ROOT = Path(__file__).resolve().parents[1]


def machine_note() -> str:
    """One line saying that client and server share this machine, with its load average."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    cores = os.cpu_count()
    shared = " (shared machine: load average > 2.5)" if os.getloadavg()[0] > 2.5 else ""
    return (f"client (this load generator) and server share this machine: {cores} CPU cores, "
            f"load average {load}{shared}")


# --------------------------------------------------------------------------------------------- client
class HTTPConnection:
    """One HTTP/1.1 connection to ``host:port`` issuing ``GET`` requests; reconnects when the server closes."""

    def __init__(self, host: str, port: int, *, timeout_s: float = 10.0, headers: Mapping[str, str] | None = None) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._head = f"Host: {host}:{port}\r\nUser-Agent: recsys-bench\r\nAccept: */*\r\n{extra}\r\n".encode("latin-1")
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self.connects = 0

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None
        self._buf.clear()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connects += 1
        self._sock = sock
        return sock

    def get(self, path: str) -> tuple[int, int]:
        """Send ``GET path`` and read the whole response. Returns ``(status, body bytes)``.

        Raises:
            OSError: connection refused / reset / timed out, or a malformed response (``ConnectionError``).
        """
        reused = self._sock is not None
        try:
            try:
                return self._roundtrip(path)
            except ConnectionError as exc:
                if not reused or getattr(exc, "got_bytes", False):
                    raise
                self.close()  # the server closed an idle kept-alive connection: retry once on a new one
                return self._roundtrip(path)
        except OSError:
            self.close()
            raise

    def _roundtrip(self, path: str) -> tuple[int, int]:
        sock = self._sock or self._connect()
        sock.sendall(b"GET " + path.encode("latin-1") + b" HTTP/1.1\r\n" + self._head)
        buf = self._buf
        end = buf.find(b"\r\n\r\n")
        while end < 0:
            self._recv(sock, bool(buf))
            end = buf.find(b"\r\n\r\n")
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        del buf[: end + 4]
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise _error(f"malformed status line {lines[0]!r}", True)
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        keep = parts[0] == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            size = self._read_chunked(sock)
        elif "content-length" in headers:
            size = int(headers["content-length"])
            while len(buf) < size:
                self._recv(sock, True)
            del buf[:size]
        else:  # body delimited by the end of the connection
            size = len(buf)
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                size += len(chunk)
            keep = False
        if not keep:
            self.close()
        return status, size

    def _read_chunked(self, sock: socket.socket) -> int:
        buf, total = self._buf, 0
        while True:
            nl = buf.find(b"\r\n")
            while nl < 0:
                self._recv(sock, True)
                nl = buf.find(b"\r\n")
            size = int(bytes(buf[:nl]).split(b";", 1)[0].strip() or b"0", 16)
            del buf[: nl + 2]
            if size == 0:  # trailers end with an empty line
                while (end := buf.find(b"\r\n")) != 0:
                    if end < 0:
                        self._recv(sock, True)
                    else:
                        del buf[: end + 2]
                del buf[:2]
                return total
            while len(buf) < size + 2:
                self._recv(sock, True)
            del buf[: size + 2]
            total += size

    def _recv(self, sock: socket.socket, got_bytes: bool) -> None:
        chunk = sock.recv(65536)
        if not chunk:
            raise _error("the server closed the connection mid-response" if got_bytes else "connection closed", got_bytes)
        self._buf += chunk


def _error(message: str, got_bytes: bool) -> ConnectionError:
    exc = ConnectionError(message)
    exc.got_bytes = got_bytes  # type: ignore[attr-defined]
    return exc


# --------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class LoadResult:
    """What one load run measured. Latencies are in milliseconds over requests that got a response."""

    mode: str
    """``open`` (fixed rate, latency from the scheduled send time) or ``closed`` (max throughput)."""
    target: str
    """Base URL and the first path requested."""
    concurrency: int
    """Connection threads (open loop) or concurrent requests (closed loop)."""
    target_rps: float | None
    duration_s: float
    """From the first scheduled send to the last response."""
    requests: int
    """Requests sent (responses + transport failures)."""
    ok: int
    """Responses with status < 400."""
    errors: int
    """Responses with status >= 400, transport failures and (open loop) requests never sent in time."""
    error_kinds: dict[str, int]
    achieved_rps: float
    """Responses per second (any status) over ``duration_s``."""
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None
    connects: int
    """TCP connections opened (``requests`` of them when the server closes after each response)."""
    client_cpu_s: float
    """CPU time of this whole process (the load generator) during the run."""
    server_cpu_s: float | None = None
    """CPU time of the server's processes during the run, when they were given."""
    note: str = field(default_factory=machine_note)

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}

    def summary(self) -> str:
        rate = f"{self.target_rps:g} req/s scheduled, " if self.target_rps else ""
        cpu = f"client CPU {100 * self.client_cpu_s / max(self.duration_s, 1e-9):.0f}% of a core"
        if self.server_cpu_s is not None:
            cpu += f", server CPU {100 * self.server_cpu_s / max(self.duration_s, 1e-9):.0f}%"
        return (f"{self.mode} loop, {rate}{self.concurrency} connections: {self.achieved_rps:,.0f} req/s achieved, "
                f"p50/p90/p99/max {fmt_ms(self.p50_ms)}/{fmt_ms(self.p90_ms)}/{fmt_ms(self.p99_ms)}/"
                f"{fmt_ms(self.max_ms)} ms, {self.errors} errors of {self.requests}; {cpu}; {self.target}")


def fmt_ms(value: float | None) -> str:
    """Milliseconds for a table: 3 significant figures, ``-`` when unknown."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def _path_fn(paths: Paths) -> Callable[[int], str]:
    if callable(paths):
        return paths
    seq = list(paths)
    if not seq:
        raise ValueError("paths must hold at least one path")
    bad = [p for p in seq if not p.startswith("/")]
    if bad:
        raise ValueError(f"paths must start with '/', got {bad[0]!r}")
    return lambda i: seq[i % len(seq)]


def _split(base_url: str) -> tuple[str, int]:
    url = urlsplit(base_url)
    if url.scheme != "http" or not url.hostname:
        raise ValueError(f"base_url must be http://host[:port], got {base_url!r}")
    return url.hostname, url.port or 80


@dataclass
class _Tally:
    """One thread's counts (merged at the end; no locks on the hot path)."""

    errors: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    ok: int = 0
    responses: int = 0
    latencies: list[float] = field(default_factory=list)

    def record(self, status: int | None, kind: str | None, latency: float) -> None:
        self.sent += 1
        if status is None:
            self.errors[kind or "transport"] += 1
            return
        self.responses += 1
        self.latencies.append(latency)
        if status < 400:
            self.ok += 1
        else:
            self.errors[f"http {status}"] += 1


def _send(conn: HTTPConnection, path: str) -> tuple[int | None, str | None]:
    try:
        status, _ = conn.get(path)
    except TimeoutError:
        return None, "timeout"
    except OSError as exc:
        return None, type(exc).__name__
    return status, None


def _result(mode: str, base_url: str, first: str, concurrency: int, target_rps: float | None, seconds: float,
            tallies: list[_Tally], conns: list[HTTPConnection], cpu_s: float, server_cpu_s: float | None,
            not_sent: int = 0) -> LoadResult:
    lat = np.array([x for t in tallies for x in t.latencies], dtype=np.float64) * 1e3
    errors: Counter[str] = Counter()
    for t in tallies:
        errors.update(t.errors)
    if not_sent:
        errors["not sent before the deadline"] += not_sent
    responses = sum(t.responses for t in tallies)

    def pct(q: float) -> float | None:
        return float(np.percentile(lat, q)) if len(lat) else None

    return LoadResult(
        mode=mode, target=f"{base_url}{first}", concurrency=concurrency, target_rps=target_rps, duration_s=seconds,
        requests=sum(t.sent for t in tallies), ok=sum(t.ok for t in tallies), errors=sum(errors.values()),
        error_kinds=dict(errors), achieved_rps=responses / seconds if seconds > 0 else 0.0,
        p50_ms=pct(50), p90_ms=pct(90), p99_ms=pct(99), max_ms=float(lat.max()) if len(lat) else None,
        mean_ms=float(lat.mean()) if len(lat) else None, connects=sum(c.connects for c in conns),
        client_cpu_s=cpu_s, server_cpu_s=server_cpu_s,
    )


def _run_threads(targets: list[Callable[[], None]]) -> None:
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


# --------------------------------------------------------------------------------------------- modes
def open_loop(
    base_url: str,
    paths: Paths,
    *,
    rate: float,
    duration_s: float,
    connections: int = 32,
    warmup_s: float = 1.0,
    timeout_s: float = 10.0,
    headers: Mapping[str, str] | None = None,
    server_cpu: Callable[[], float] | None = None,
) -> LoadResult:
    """Send ``rate * duration_s`` requests scheduled at a fixed rate over ``connections`` threads.

    Each latency runs from the request's scheduled time to its response, so time spent waiting for a free
    connection counts. Requests still unsent ``duration_s + max(10, duration_s)`` seconds after the start
    are dropped and counted as errors (the server is far past its capacity).

    Args:
        server_cpu: returns the server's cumulative CPU seconds (reported for the run when given).
    """
    if rate <= 0 or duration_s <= 0 or connections < 1:
        raise ValueError(f"rate and duration_s must be > 0 and connections >= 1, got {rate}, {duration_s}, {connections}")
    path = _path_fn(paths)
    host, port = _split(base_url)
    if warmup_s > 0:
        closed_loop(base_url, path, concurrency=min(connections, 4), duration_s=warmup_s,
                    warmup_s=0, timeout_s=timeout_s, headers=headers)
    total = max(1, int(round(rate * duration_s)))
    conns = [HTTPConnection(host, port, timeout_s=timeout_s, headers=headers) for _ in range(connections)]
    tallies = [_Tally() for _ in conns]
    dropped = [0] * connections
    counter = itertools.count()
    last_done = [0.0] * connections
    cpu0, srv0 = time.process_time(), server_cpu() if server_cpu else None
    t0 = time.perf_counter() + 0.05
    give_up = t0 + duration_s + max(10.0, duration_s)

    def worker(k: int) -> None:
        conn, tally = conns[k], tallies[k]
        while (i := next(counter)) < total:
            scheduled = t0 + i / rate
            now = time.perf_counter()
            if now < scheduled:
                time.sleep(scheduled - now)
            elif now > give_up:
                dropped[k] += 1
                continue
            status, kind = _send(conn, path(i))
            done = time.perf_counter()
            tally.record(status, kind, done - scheduled)
            last_done[k] = done
        conn.close()

    _run_threads([lambda k=k: worker(k) for k in range(connections)])
    seconds = max(max(last_done) - t0, 1e-9)
    srv = server_cpu() - srv0 if server_cpu and srv0 is not None else None
    return _result("open", base_url, path(0), connections, rate, seconds, tallies, conns,
                   time.process_time() - cpu0, srv, sum(dropped))


def closed_loop(
    base_url: str,
    paths: Paths,
    *,
    concurrency: int = 16,
    duration_s: float = 10.0,
    warmup_s: float = 1.0,
    timeout_s: float = 10.0,
    headers: Mapping[str, str] | None = None,
    server_cpu: Callable[[], float] | None = None,
) -> LoadResult:
    """``concurrency`` threads each send the next request when the last is answered, for ``duration_s``."""
    if duration_s <= 0 or concurrency < 1:
        raise ValueError(f"duration_s must be > 0 and concurrency >= 1, got {duration_s}, {concurrency}")
    path = _path_fn(paths)
    host, port = _split(base_url)
    if warmup_s > 0:
        closed_loop(base_url, path, concurrency=concurrency, duration_s=warmup_s, warmup_s=0,
                    timeout_s=timeout_s, headers=headers)
    conns = [HTTPConnection(host, port, timeout_s=timeout_s, headers=headers) for _ in range(concurrency)]
    tallies = [_Tally() for _ in conns]
    counter = itertools.count()
    last_done = [0.0] * concurrency
    cpu0, srv0 = time.process_time(), server_cpu() if server_cpu else None
    t0 = time.perf_counter()
    stop = t0 + duration_s

    def worker(k: int) -> None:
        conn, tally = conns[k], tallies[k]
        while (start := time.perf_counter()) < stop:
            status, kind = _send(conn, path(next(counter)))
            done = time.perf_counter()
            tally.record(status, kind, done - start)
            last_done[k] = done
        conn.close()

    _run_threads([lambda k=k: worker(k) for k in range(concurrency)])
    seconds = max(max(last_done) - t0, 1e-9)
    srv = server_cpu() - srv0 if server_cpu and srv0 is not None else None
    return _result("closed", base_url, path(0), concurrency, None, seconds, tallies, conns,
                   time.process_time() - cpu0, srv)


# --------------------------------------------------------------------------------------------- server
def exit_on_sigterm() -> None:
    """Make SIGTERM raise ``SystemExit`` so that ``with gunicorn_server(...)`` blocks stop their servers.

    For a benchmark script's ``main`` (``benchmarks/run`` stops a script that overruns with SIGTERM).
    """
    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def process_memory(pid: int) -> dict[str, int] | None:
    """``rss``, ``pss`` and their parts (bytes) of process ``pid`` from ``/proc/<pid>/smaps_rollup`` (Linux 4.14+),
    ``None`` when it is gone or unreadable.

    RSS counts every resident page the process maps, also those it shares with others (the gunicorn master's
    preloaded app after ``fork``, the page cache of memory-mapped files); PSS divides each shared page by the
    number of processes mapping it, so the PSS of all the processes of a service add up to what it holds.
    ``private`` (``Private_Clean + Private_Dirty``) is what only this process holds; ``anonymous``: not file-backed.
    """
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    kb: dict[str, int] = {}
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            kb[name.strip()] = int(parts[0])
    return {"rss": kb.get("Rss", 0) * 1024, "pss": kb.get("Pss", 0) * 1024,
            "private": (kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)) * 1024,
            "anonymous": kb.get("Anonymous", 0) * 1024}


@dataclass
class GunicornServer:
    """A running gunicorn (see :func:`gunicorn_server`)."""

    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    args: list[str]

    def worker_pids(self) -> list[int]:
        return _children(self.process.pid)

    def cpu_seconds(self) -> float:
        """CPU seconds used so far by the master and its live workers (Linux ``/proc``; 0 elsewhere)."""
        return sum(_cpu_seconds(p) for p in [self.process.pid, *self.worker_pids()])

    def memory(self) -> dict[str, Any]:
        """Memory of the master and each worker (:func:`process_memory`, bytes) and the service ``total_pss``
        (master + workers): ``{"master": {...}, "workers": {pid: {...}}, "total_pss": int, "total_rss": int}``.
        ``total_rss`` counts shared pages once per process (what adding up RSS would claim)."""
        master = process_memory(self.process.pid)
        workers = {pid: m for pid in self.worker_pids() if (m := process_memory(pid)) is not None}
        procs = [m for m in (master, *workers.values()) if m is not None]
        return {"master": master, "workers": workers, "total_pss": sum(m["pss"] for m in procs),
                "total_rss": sum(m["rss"] for m in procs)}

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _get_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - a local http URL we built
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def _die_with_parent() -> None:
    """In the child before ``exec`` (Linux): SIGTERM it when the process that started it dies, so that a
    benchmark killed outright (SIGKILL, the OOM killer) does not leave its gunicorn master and workers behind
    (seen: four orphaned 1M-item workers holding 21 GB). A no-op where ``prctl`` is not available."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def gunicorn_server(
    app: str,
    *,
    log_path: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    pythonpath: Path | None = None,
    gunicorn_args: Sequence[str] = SERVICE_GUNICORN_ARGS,
    ready_path: str = "/healthz",
    start_timeout_s: float = 300.0,
) -> Iterator[GunicornServer]:
    """Start ``gunicorn [gunicorn_args] app`` on a free local port and wait until every worker has loaded.

    Ready means ``ready_path`` answers 200 and the workers' CPU use has settled (each sync worker loads the
    app before it accepts connections, so a 200 from one worker does not mean the others are done).
    ``--timeout 300`` is added so that slow app loading on a busy machine does not get workers killed; it
    does not change request handling. Stops the server (SIGTERM to its process group) on exit.

    Raises:
        RuntimeError: gunicorn exited or was not ready in ``start_timeout_s``; the message holds its log tail.
    """
    port = free_port()
    exe = Path(sys.executable).with_name("gunicorn")
    cmd = [str(exe) if exe.exists() else "gunicorn", *gunicorn_args, "-b", f"127.0.0.1:{port}", "--timeout", "300"]
    if pythonpath is not None:
        cmd += ["--pythonpath", str(pythonpath)]
    cmd.append(app)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    run_env = dict(env if env is not None else os.environ)  # the repository importable (services.gunicorn_conf)
    run_env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [run_env.get("PYTHONPATH")])])
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=run_env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
    server = GunicornServer(f"http://127.0.0.1:{port}", proc, log_path, cmd)
    try:
        _wait_ready(server, ready_path, start_timeout_s)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_ready(server: GunicornServer, ready_path: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last: int | None = None
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with status {server.process.returncode}:\n{server.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"gunicorn not ready after {timeout_s:.0f} s (last {ready_path}: {last}):\n{server.log_tail()}")
        last = _get_status(server.base_url + ready_path)
        if last == 200:
            break
        time.sleep(0.25)
    quiet = 0  # then wait for the workers' loading to finish: CPU use settles
    before = server.cpu_seconds()
    while quiet < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
        now = server.cpu_seconds()
        quiet = quiet + 1 if now - before < 0.05 else 0
        before = now
