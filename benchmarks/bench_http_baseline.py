"""Baseline: a bare Flask JSON endpoint under gunicorn, measured with the same load generator as the service.

The app has one route shaped like the service's similar-items route, ``GET /v1/items/<id>/similar?k=10``,
that returns ``{"items": [...k ids...]}`` without any work behind it; it is served by gunicorn with the
service's worker settings (:data:`http_load.SERVICE_GUNICORN_ARGS`, the README's production command). What
it measures is the ceiling that Flask + gunicorn + the client put on any endpoint of this machine:

- max req/s (closed loop, ``--concurrency`` connections);
- p50 / p99 latency at a fixed rate (open loop, ``--rate`` req/s, latency from the scheduled send time).

    python benchmarks/bench_http_baseline.py [--rate 200] [--duration 10] [--json PATH] [--quick]

gunicorn imports this module as ``bench_http_baseline:app`` (with ``--pythonpath benchmarks``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from flask import Flask, request

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from http_load import (  # noqa: E402
    SERVICE_GUNICORN_ARGS,
    LoadResult,
    closed_loop,
    exit_on_sigterm,
    fmt_ms,
    gunicorn_server,
    machine_note,
    open_loop,
)


def create_baseline_app() -> Flask:
    """The bare app: ``/healthz`` and ``/v1/items/<id>/similar?k=`` returning ``k`` (default 10) made-up ids."""
    app = Flask("baseline")
    app.json.sort_keys = False  # type: ignore[attr-defined]  # as the service does

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/items/<item_id>/similar")
    def similar(item_id: str) -> dict[str, Any]:
        k = request.args.get("k", 10, type=int)
        return {"items": [f"{item_id}-{j}" for j in range(k)]}

    return app


app = create_baseline_app()


def baseline_paths(n: int = 1000) -> list[str]:
    return [f"/v1/items/I{i:06d}/similar?k=10" for i in range(n)]


def measure_baseline(*, rate: float, duration_s: float, concurrency: int, connections: int,
                     gunicorn_args: tuple[str, ...] = SERVICE_GUNICORN_ARGS,
                     log_dir: Path | None = None) -> dict[str, LoadResult]:
    """Serve the bare app with gunicorn and measure it: ``{"open": ..., "closed": ...}``."""
    with tempfile.TemporaryDirectory(prefix="bench_http_baseline_") as tmp:
        log = (log_dir or Path(tmp)) / "gunicorn-baseline.log"
        with gunicorn_server("bench_http_baseline:app", log_path=log, pythonpath=HERE, cwd=HERE,
                             gunicorn_args=gunicorn_args) as server:
            paths = baseline_paths()
            closed = closed_loop(server.base_url, paths, concurrency=concurrency, duration_s=duration_s,
                                 server_cpu=server.cpu_seconds)
            opened = open_loop(server.base_url, paths, rate=rate, duration_s=duration_s, connections=connections,
                               server_cpu=server.cpu_seconds)
    return {"closed": closed, "open": opened}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200.0, help="open-loop request rate (req/s)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    ap.add_argument("--concurrency", type=int, default=16, help="closed-loop concurrent connections")
    ap.add_argument("--connections", type=int, default=32, help="open-loop connection threads")
    ap.add_argument("--quick", action="store_true", help="2-second measurements (a smoke run)")
    ap.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the figures as JSON here")
    args = ap.parse_args()
    exit_on_sigterm()
    if args.quick:
        args.duration = min(args.duration, 2.0)
    res = measure_baseline(rate=args.rate, duration_s=args.duration, concurrency=args.concurrency,
                           connections=args.connections)
    closed, opened = res["closed"], res["open"]
    print(f"\n### Bare Flask JSON endpoint, gunicorn {' '.join(SERVICE_GUNICORN_ARGS)} (sync workers)\n")
    print(machine_note() + "\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| max req/s (closed loop, {closed.concurrency} connections) | {closed.achieved_rps:,.0f} "
          f"(p50 / p99 {fmt_ms(closed.p50_ms)} / {fmt_ms(closed.p99_ms)} ms, {closed.errors} errors) |")
    print(f"| p50 / p99 at {args.rate:g} req/s (open loop) | {fmt_ms(opened.p50_ms)} / {fmt_ms(opened.p99_ms)} ms "
          f"({opened.achieved_rps:,.0f} req/s achieved, {opened.errors} errors) |")
    print(f"| client CPU (closed / open loop) | {100 * closed.client_cpu_s / closed.duration_s:.0f}% / "
          f"{100 * opened.client_cpu_s / opened.duration_s:.0f}% of a core |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "bench": "http_baseline", "machine": machine_note(), "gunicorn": list(SERVICE_GUNICORN_ARGS),
            "max_rps": closed.achieved_rps, "rate": args.rate, "p50_ms": opened.p50_ms, "p99_ms": opened.p99_ms,
            "closed": closed.to_dict(), "open": opened.to_dict(),
        }, indent=2))


if __name__ == "__main__":
    main()
