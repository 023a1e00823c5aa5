#!/usr/bin/env python
"""Home-feed latency over HTTP with impression logging off and on, interleaved in one run (issue 13:
logging adds <= 10% to the feed's p50 in the service benchmark).

Prepares a catalogue as ``bench_service.py`` does (or reuses ``--data-dir``), then starts two gunicorn
services on it with the production worker settings, one with ``RECSYS_IMPRESSIONS_ENABLED=false`` and one
with logging on (spool and background writer, as deployed). Only one of them is loaded at a time: the
rounds alternate (off, on, on, off, ...), each an open-loop run of ``GET /v1/users/<id>/recommendations``
at ``--rate`` req/s for ``--duration`` s over the same users, so that a drift of the machine's load hits
both alike (``--loop closed``: instead, ``--concurrency`` connections each sending the next request when the
last is answered: service time without queueing, the steadier choice on a busy machine). Prints p50 / p99
per side (the median over rounds of each round's figure), the ratio of the p50s and the median of the
per-round-pair ratios, and how many lists the logging service wrote to SQL.

    python benchmarks/bench_impressions_http.py --quick                 # smoke: small shop, tiny encoders
    python benchmarks/bench_impressions_http.py --rounds 6 --duration 10 --rate 50
    python benchmarks/bench_impressions_http.py --loop closed --concurrency 1 --rounds 6 --duration 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (str(REPO), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from bench_service import ENDPOINTS, catalogue_counts, prepare_demo, sample_ids  # noqa: E402
from http_load import (  # noqa: E402
    SERVICE_GUNICORN_ARGS,
    closed_loop,
    exit_on_sigterm,
    fmt_ms,
    gunicorn_server,
    machine_note,
    open_loop,
)

from recsys.config import Config, load_config  # noqa: E402

SIDES = ("off", "on")


def _env(config: Config, logging_on: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env["RECSYS_CONFIG"] = str(Path(config.data_dir) / "config.yaml")
    env["RECSYS_IMPRESSIONS_ENABLED"] = "true" if logging_on else "false"
    return env


def written_lists(config: Config) -> int:
    from sqlalchemy import func, select

    from recsys.store.db import engine_from_config
    from recsys.store.models import Impression

    engine = engine_from_config(config)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(Impression)).scalar_one())
    finally:
        engine.dispose()


def measure(config: Config, users: list[str], *, rounds: int, rate: float, duration_s: float, connections: int,
            log_dir: Path, loop: str = "open", concurrency: int = 1,
            gunicorn_args: tuple[str, ...] = SERVICE_GUNICORN_ARGS) -> dict[str, Any]:
    """Alternating rounds against the two services (see the module docstring)."""
    paths = [ENDPOINTS["recommendations"].format(id=u) for u in users]

    def load(server: Any, seconds: float) -> Any:
        if loop == "closed":
            return closed_loop(server.base_url, paths, concurrency=concurrency, duration_s=seconds,
                               server_cpu=server.cpu_seconds)
        return open_loop(server.base_url, paths, rate=rate, duration_s=seconds, connections=connections,
                         server_cpu=server.cpu_seconds)

    runs: dict[str, list[Any]] = {s: [] for s in SIDES}
    before = written_lists(config)
    with ExitStack() as stack:
        servers = {s: stack.enter_context(gunicorn_server("services.wsgi:app", log_path=log_dir / f"gunicorn-{s}.log",
                                                          cwd=REPO, env=_env(config, s == "on"), ready_path="/readyz",
                                                          gunicorn_args=gunicorn_args, start_timeout_s=900.0))
                   for s in SIDES}
        for server in servers.values():  # warm-up: every worker answers feeds before the clock runs
            load(server, min(duration_s, 3.0))
        for r in range(rounds):
            order = SIDES if r % 2 == 0 else SIDES[::-1]
            for s in order:
                res = load(servers[s], duration_s)
                runs[s].append(res)
                print(f"round {r + 1} {s}: {res.summary()}", file=sys.stderr)
        time.sleep(max(2.0, 2 * config.impressions.flush_interval_s))  # the writers commit what is queued
    # the services have exited (SIGTERM): gunicorn's worker_exit hook has flushed their queues
    return {"runs": runs, "written": written_lists(config) - before}


def summarise(runs: dict[str, list[Any]]) -> dict[str, Any]:
    def med(side: str, key: str) -> float:
        return statistics.median(getattr(r, key) for r in runs[side])

    out: dict[str, Any] = {s: {"p50_ms": med(s, "p50_ms"), "p99_ms": med(s, "p99_ms"),
                               "requests": sum(r.requests for r in runs[s]),
                               "errors": sum(r.errors for r in runs[s]),
                               "achieved_rps": med(s, "achieved_rps")} for s in SIDES}
    out["p50_ratio"] = out["on"]["p50_ms"] / out["off"]["p50_ms"]
    out["p99_ratio"] = out["on"]["p99_ms"] / out["off"]["p99_ms"]
    out["paired_p50_ratio"] = statistics.median(a.p50_ms / b.p50_ms for a, b in zip(runs["on"], runs["off"]))
    out["rounds_p50_ms"] = {s: [round(r.p50_ms, 3) for r in runs[s]] for s in SIDES}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--encoders", choices=["default", "tiny"], default="default")
    ap.add_argument("--database-url", default=None, help="default: a SQLite file in the data directory")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="prepare here and keep it; reused as it is when it holds a config.yaml")
    ap.add_argument("--rounds", type=int, default=6, help="rounds per side (alternating order)")
    ap.add_argument("--rate", type=float, default=100.0, help="open-loop feed requests per second")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per round")
    ap.add_argument("--connections", type=int, default=16, help="open loop: connection threads")
    ap.add_argument("--loop", choices=["open", "closed"], default="open")
    ap.add_argument("--concurrency", type=int, default=1, help="closed loop: concurrent connections")
    ap.add_argument("--workers", type=int, default=None,
                    help=f"gunicorn workers per service (default: the production {' '.join(SERVICE_GUNICORN_ARGS)}; "
                         "--quick: 1)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 100 items, tiny encoders, 4 rounds of 2 s, 1 worker")
    ap.add_argument("--json", type=Path, default=None, metavar="PATH")
    args = ap.parse_args()
    exit_on_sigterm()
    if args.quick:
        args.items, args.users, args.encoders = 100, 60, "tiny"
        args.rounds, args.duration, args.rate = min(args.rounds, 4), min(args.duration, 2.0), min(args.rate, 50.0)
        args.workers = args.workers or 1
    gunicorn_args = ("-w", str(args.workers)) if args.workers else SERVICE_GUNICORN_ARGS
    with tempfile.TemporaryDirectory(prefix="bench_impressions_http_") as tmp:
        data_dir = (args.data_dir or Path(tmp) / "data").resolve()
        if args.data_dir and (data_dir / "config.yaml").is_file():
            print(f"reusing the catalogue in {data_dir}", file=sys.stderr)
            config = load_config(data_dir / "config.yaml", env={})
        else:
            config = prepare_demo(data_dir, n_items=args.items, n_users=args.users, encoders=args.encoders,
                                  database_url=args.database_url)
        counts = catalogue_counts(config)
        _items, users = sample_ids(config)
        note_before = machine_note()
        got = measure(config, users, rounds=args.rounds, rate=args.rate, duration_s=args.duration,
                      connections=args.connections, log_dir=Path(tmp), loop=args.loop, concurrency=args.concurrency,
                      gunicorn_args=gunicorn_args)
    s = summarise(got["runs"])
    how = (f"at {args.rate:g} req/s (open loop)" if args.loop == "open"
           else f"closed loop, {args.concurrency} connection(s)")
    print(f"\n### Feed latency over HTTP, impression logging off vs on ({counts['items']:,} items, "
          f"{counts['users']:,} users; gunicorn {' '.join(gunicorn_args)}; {args.rounds} alternating rounds "
          f"of {args.duration:g} s {how} per side)\n")
    print("| metric | logging off | logging on | ratio | target | met? |")
    print("|---|---|---|---|---|---|")
    print(f"| feed p50 ms (median of rounds) | {fmt_ms(s['off']['p50_ms'])} | {fmt_ms(s['on']['p50_ms'])} | "
          f"{s['p50_ratio']:.3f} (paired rounds: {s['paired_p50_ratio']:.3f}) | <= 1.10 | "
          f"{'yes' if s['p50_ratio'] <= 1.10 else 'no'} |")
    print(f"| feed p99 ms (median of rounds) | {fmt_ms(s['off']['p99_ms'])} | {fmt_ms(s['on']['p99_ms'])} | "
          f"{s['p99_ratio']:.3f} | - | - |")
    print(f"| requests, errors | {s['off']['requests']:,}, {s['off']['errors']} | {s['on']['requests']:,}, "
          f"{s['on']['errors']} | - | - | - |")
    print(f"\nLists written to SQL by the logging service: {got['written']:,} (of {s['on']['requests']:,} timed "
          f"requests plus its warm-up). Per-round p50 ms: {s['rounds_p50_ms']}.")
    slow = [r for side in got["runs"].values() for r in side if r.target_rps and r.achieved_rps < 0.9 * r.target_rps]
    if slow:
        print(f"WARNING: {len(slow)} of {2 * args.rounds} rounds achieved under 90% of the scheduled rate: the service "
              "was saturated and those latencies measure queueing; lower --rate or use --loop closed.")
    print(f"Machine before: {note_before}; after: {machine_note()}.")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"bench": "impressions_http", "summary": s, "written": got["written"],
                                         "catalogue": counts, "args": vars(args) | {"json": str(args.json)},
                                         "runs": {k: [r.to_dict() for r in v] for k, v in got["runs"].items()}},
                                        indent=2, default=str))


if __name__ == "__main__":
    main()
