"""The benchmark tooling: the HTTP load generator against a tiny local Flask app, and ``benchmarks/run``.

No timing assertions on speed: the load generator's figures are checked for structure and for what they
must hold whatever the machine's speed (request counts, error counts, and that open-loop latency counts
the queueing delay of a server slower than the schedule, which only a lower bound can show).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from flask import Flask, Response, request
from werkzeug.serving import make_server

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"


@pytest.fixture(scope="module")
def http_load() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        import http_load as module
    finally:
        sys.path.remove(str(BENCH))
    return module


@pytest.fixture(scope="module")
def runner() -> ModuleType:
    """``benchmarks/run`` imported as a module (it has no ``.py`` suffix)."""
    loader = importlib.machinery.SourceFileLoader("bench_runner", str(BENCH / "run"))
    spec = importlib.util.spec_from_loader("bench_runner", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_runner"] = module
    loader.exec_module(module)
    return module


def _tiny_app() -> Flask:
    app = Flask("tiny")

    @app.get("/ok/<int:n>")
    def ok(n: int) -> dict[str, Any]:
        return {"items": [n + j for j in range(10)]}

    @app.get("/fail/<int:n>")
    def fail(n: int) -> tuple[dict[str, str], int]:
        return {"error": "boom"}, 500

    @app.get("/slow")
    def slow() -> dict[str, bool]:
        time.sleep(float(request.args.get("s", "0.02")))
        return {"slow": True}

    @app.get("/chunked")
    def chunked() -> Response:
        return Response((b"x" * n for n in (5, 0, 300, 7)), mimetype="text/plain")  # no Content-Length: chunked

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    srv = make_server("127.0.0.1", 0, _tiny_app(), threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    thread.join(timeout=5)


def test_open_loop_counts_requests_and_errors(http_load: ModuleType, server: str) -> None:
    paths = [f"/fail/{i}" if i % 5 == 0 else f"/ok/{i}" for i in range(40)]
    res = http_load.open_loop(server, paths, rate=100, duration_s=0.4, connections=4, warmup_s=0)
    assert res.mode == "open" and res.target_rps == 100 and res.concurrency == 4
    assert res.requests == 40 and res.ok == 32 and res.errors == 8
    assert res.error_kinds == {"http 500": 8}
    assert 0 < res.p50_ms <= res.p90_ms <= res.p99_ms <= res.max_ms
    assert res.achieved_rps > 0 and res.client_cpu_s >= 0
    assert "share this machine" in res.note
    d = res.to_dict()
    json.dumps(d, allow_nan=False)
    assert {"p50_ms", "p90_ms", "p99_ms", "max_ms", "achieved_rps", "errors", "requests", "connects"} <= set(d)


def test_closed_loop_opens_a_connection_per_request_when_the_server_closes(http_load: ModuleType, server: str) -> None:
    res = http_load.closed_loop(server, lambda i: f"/ok/{i}", concurrency=2, duration_s=0.3, warmup_s=0)
    assert res.mode == "closed" and res.target_rps is None
    assert res.requests > 2 and res.errors == 0 and res.ok == res.requests
    assert res.connects == res.requests  # werkzeug's server answers "Connection: close" (as gunicorn's sync workers)
    assert res.p50_ms is not None and res.p50_ms <= res.max_ms


class _KeepAliveHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive: a fixed-length body, or a chunked one for ``/chunked``."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(200)
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"3;ext=1\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n")
            return
        body = b'{"ok": true}'
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_kept_alive_connections_are_reused(http_load: ModuleType) -> None:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAliveHandler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{srv.server_port}"
        res = http_load.closed_loop(base, ["/a", "/chunked"], concurrency=2, duration_s=0.3, warmup_s=0)
        assert res.requests > 2 and res.errors == 0 and res.connects == 2
        conn = http_load.HTTPConnection("127.0.0.1", srv.server_port)
        assert [conn.get("/chunked"), conn.get("/a"), conn.get("/chunked")] == [(200, 3), (200, 12), (200, 3)]
        assert conn.connects == 1
        conn.close()
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def test_open_loop_latency_includes_queueing_behind_a_slow_server(http_load: ModuleType, server: str) -> None:
    # 1 connection, 50 requests scheduled over 0.5 s, each served in >= 20 ms: they cannot all finish before
    # 1.0 s, so request i waits at least (i + 1) * 20 ms - i * 10 ms. Measured from the actual send time the
    # latencies would all be ~20 ms (coordinated omission).
    res = http_load.open_loop(server, ["/slow?s=0.02"], rate=100, duration_s=0.5, connections=1, warmup_s=0)
    assert res.requests == 50 and res.errors == 0
    assert res.p50_ms >= 200 and res.max_ms >= 450
    assert res.duration_s >= 1.0


def test_connection_reads_chunked_bodies_and_reports_refused_connections(http_load: ModuleType, server: str) -> None:
    host, port = server.removeprefix("http://").split(":")
    conn = http_load.HTTPConnection(host, int(port))
    assert conn.get("/chunked") == (200, 312)
    assert conn.get("/ok/1")[0] == 200 and conn.connects == 2  # the server closed after the first response
    conn.close()
    dead = http_load.HTTPConnection("127.0.0.1", http_load.free_port(), timeout_s=2)
    with pytest.raises(OSError):
        dead.get("/")
    res = http_load.open_loop(f"http://127.0.0.1:{http_load.free_port()}", ["/x"], rate=50, duration_s=0.1,
                              connections=1, warmup_s=0)
    assert res.errors == res.requests == 5 and res.p50_ms is None
    json.dumps(res.to_dict(), allow_nan=False)


def test_bad_arguments_are_refused(http_load: ModuleType, server: str) -> None:
    with pytest.raises(ValueError, match="paths must start with '/'"):
        http_load.closed_loop(server, ["ok/1"], duration_s=0.1)
    with pytest.raises(ValueError, match="base_url must be http"):
        http_load.open_loop("https://example.org", ["/"], rate=1, duration_s=1)
    with pytest.raises(ValueError, match="rate and duration_s must be > 0"):
        http_load.open_loop(server, ["/"], rate=0, duration_s=1)


def test_runner_reads_both_ingest_json_shapes(runner: ModuleType) -> None:
    new = runner.rows_ingest(
        {"events": 1_000_000, "sqlite_events_per_s": 84_000.0, "postgresql_events_per_s": 44_000.0}, False)
    assert [(r.value, r.met) for r in new] == [("84,000", "yes"), ("44,000", "**no**")]
    old = runner.rows_ingest(
        {"events": 20_000, "results": {"sqlite": {"load_eps": 90_000.0}, "postgresql": "skipped: down"}}, True)
    assert old[0].value == "90,000" and old[0].met.startswith("n/a")
    assert old[1].value == "skipped: down"


def test_runner_judges_hybrid_search_against_dense_only_of_the_same_run(runner: ModuleType) -> None:
    def figures(items: int, hybrid_p99: float) -> dict[str, Any]:
        lat = {"semantic": 10.0, "hybrid": hybrid_p99, "lexical": 5.0}
        per_mode = {m: {"p50_ms": v / 2, "p99_ms": v, "n": 30} for m, v in lat.items()}
        return {"items": items, "in_process": per_mode, "http": per_mode, "recall_vs_exact": {"semantic": 0.99}}

    rows = {r.metric.split(" p50")[0]: r for r in runner.rows_search(figures(1_000_000, 19.0), False)}
    assert rows["search: hybrid"].met == "yes" and "1.90x" in rows["search: hybrid"].baseline
    assert runner.rows_search(figures(1_000_000, 21.0), False)[1].met == "**no**"  # 2.1x dense-only
    assert runner.rows_search(figures(1_000_000, 35.0), False)[1].met == "**no**"
    assert runner.rows_search(figures(30_000, 35.0), True)[1].met.startswith("n/a")
    assert any("recall@10" in r.metric for r in rows.values())


def test_runner_skips_a_missing_script(runner: ModuleType, tmp_path: Path) -> None:
    bench = runner.Bench("nothing", "bench_does_not_exist.py", (), (), runner.rows_generic("nothing"))
    out = runner.run_bench(bench, True, 60.0, tmp_path)
    assert out.status == "skipped" and "does not exist" in out.note


def test_run_quick_http_baseline_writes_json(tmp_path: Path) -> None:
    """The real entry point end to end on its cheapest benchmark (gunicorn serving a bare Flask app)."""
    out = tmp_path / "bench.json"
    proc = subprocess.run([str(BENCH / "run"), "--quick", "--only", "http_baseline", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("| metric | value | baseline (measured in the same run) | target | met? |") == 1
    data = json.loads(out.read_text())
    assert data["quick"] is True and set(data["load_average"]) == {"before", "after"}
    bench = data["benches"]["http_baseline"]
    assert bench["status"] == "ok", bench["note"]
    figures = bench["figures"]
    assert figures["max_rps"] > 0 and figures["open"]["requests"] == int(figures["rate"] * 2)
    assert figures["closed"]["errors"] == 0 and figures["open"]["errors"] == 0
    assert {r["metric"].split(" (")[0] for r in data["rows"]} >= {"http: bare Flask JSON endpoint max req/s"}


def test_runner_lists_bench_align_and_reads_its_rows(runner: ModuleType) -> None:
    bench = {b.name: b for b in runner.BENCHES}["align"]
    assert bench.script == "bench_align.py" and bench.default and (BENCH / bench.script).is_file()
    figures = {
        "rows": [
            {"config": "current defaults", "items": 10_000, "cpu_s": 150.0, "cpu_s_per_10k": 150.0,
             "cpu_s_per_epoch_per_10k": 1.5, "epochs_run": [50, 50], "val_r10": 0.9},
            {"config": "current defaults, first 2 of 60 epochs only", "items": 100_000, "cpu_s": 60.0,
             "cpu_s_per_10k": 6.0, "cpu_s_per_epoch_per_10k": 1.5, "epochs_run": [2, 2], "val_r10": 0.9},
            {"config": "previous defaults (3 members, 2 threads, float32), first 1 epoch(s) only", "items": 10_000,
             "cpu_s": 40.0, "cpu_s_per_10k": 40.0, "cpu_s_per_epoch_per_10k": 13.3, "epochs_run": [1, 1, 1],
             "val_r10": 0.3},
        ],
        "hm": [{"config": "current defaults", "cpu_s_all": 190.0, "cpu_s_protocol": 120.0, "r10": 0.76, "mrr": 0.48}],
    }
    rows = runner.rows_align(figures, False)
    assert [r.value for r in rows] == ["150", "6", "190", "0.760"]
    assert "first 4 member-epochs only" in rows[1].metric and "13.3" in rows[0].baseline
    assert [r.met for r in rows[2:]] == ["**no**", "yes"]  # 190 CPU s > 180; R@10 0.76 >= 0.75


def test_run_bench_align_tiny(runner: ModuleType, tmp_path: Path) -> None:
    """The script end to end through the runner at a tiny size (one epoch of 400 synthetic items)."""
    bench = runner.Bench("align", "bench_align.py", (), ("--items", "400", "--epochs-at", "400:1", "--baseline-items", "0"),
                         runner.rows_align)
    out = runner.run_bench(bench, True, 300.0, tmp_path)
    assert out.status == "ok", out.note
    rows = runner.rows_align(out.figures, True)
    assert len(rows) == 1 and "400 synthetic items; first 2 member-epochs only" in rows[0].metric
    assert float(rows[0].value) > 0


def test_process_memory_reads_rss_and_pss_of_a_forked_child(http_load: ModuleType) -> None:
    """``process_memory``: PSS splits pages shared with a forked child (what the preloaded service relies on),
    so a child that touched nothing of its parent's has a PSS well below its RSS; gone processes give None."""
    import os

    import numpy as np

    block = np.ones(64 << 20, dtype=np.uint8)  # 64 MiB written by this process: shared with the child after fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child only waits to be measured
        os.close(write)
        os.read(read, 1)
        os._exit(0)
    os.close(read)
    try:
        time.sleep(0.2)
        child = http_load.process_memory(pid)
        assert child is not None and child["rss"] >= 64 << 20
        assert child["pss"] <= child["rss"] - (30 << 20)  # the block counts half in each process
        assert child["private"] < child["rss"] / 2
    finally:
        os.write(write, b"x")
        os.waitpid(pid, 0)
    assert http_load.process_memory(pid) is None
    assert int(block[-1]) == 1
