#!/usr/bin/env python
"""Home-feed latency with and without impression logging, in one run (issue 13: <= 10% on p50).

Two Flask apps over the same loaded runtime and database (``impressions.enabled`` false / true, spool on),
driven through the WSGI test client (the route, JSON encoding and the logging, no network) in alternating
rounds so that machine load hits both alike. The writer thread of the logging app commits in the
background meanwhile, as in service.

    python benchmarks/bench_impressions.py --config /tmp/sim/config.yaml --requests 400 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (str(REPO), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from http_load import machine_note


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, required=True, help="a prepared service (e.g. benchmarks/simulate.py's)")
    ap.add_argument("--requests", type=int, default=400, help="feed requests per app per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    from recsys.config import load_config
    from recsys.serving import Runtime
    from recsys.store.db import engine_from_config
    from recsys.store.models import User
    from services.app import create_app

    config = load_config(args.config, env={})
    engine = engine_from_config(config)
    rt = Runtime(config, engine)
    rt.reload()
    with engine.connect() as conn:
        users = [u for (u,) in conn.execute(User.__table__.select().with_only_columns(User.external_id).limit(500))]
    apps = {}
    for name, on in (("off", False), ("on", True)):
        cfg = config.model_copy(update={"impressions": config.impressions.model_copy(update={"enabled": on}),
                                        "experiments": ()})
        apps[name] = create_app(cfg, rt).test_client()
    lat: dict[str, list[float]] = {"off": [], "on": []}
    before = machine_note()
    for name in apps:  # warm-up
        for u in users[:50]:
            apps[name].get(f"/v1/users/{u}/recommendations?k={args.k}")
    for r in range(args.rounds):
        for name in (("off", "on") if r % 2 == 0 else ("on", "off")):
            client = apps[name]
            for i in range(args.requests):
                u = users[(r * args.requests + i) % len(users)]
                t0 = time.perf_counter()
                res = client.get(f"/v1/users/{u}/recommendations?k={args.k}")
                lat[name].append(time.perf_counter() - t0)
                if res.status_code != 200:
                    raise RuntimeError(f"{res.status_code}: {res.get_data(as_text=True)[:300]}")
    logger = apps["on"].application.extensions["recsys.impressions"]
    from recsys.serving.impressions import ImpressionRecord, new_request_id

    recs = [ImpressionRecord(new_request_id(), "feed", "u", tuple(str(i) for i in range(args.k)), ts_ms=1)
            for _ in range(2000)]
    t0 = time.perf_counter()
    for rec in recs:  # the request's whole share of the logging: serialise, spool append, enqueue
        logger.log(rec)
    per_call_us = (time.perf_counter() - t0) / len(recs) * 1e6
    logger.flush(60)
    stats = logger.stats()
    logger.close()
    after = machine_note()
    p50 = {k: statistics.median(v) * 1000 for k, v in lat.items()}
    p99 = {k: sorted(v)[int(0.99 * len(v))] * 1000 for k, v in lat.items()}
    ratio = p50["on"] / p50["off"]
    print("| metric | logging off | logging on | ratio | target | met? |")
    print("|---|---|---|---|---|---|")
    print(f"| feed p50 (ms, {len(lat['on'])} requests each) | {p50['off']:.2f} | {p50['on']:.2f} | {ratio:.3f} | <= 1.10 | "
          f"{'yes' if ratio <= 1.10 else 'no'} |")
    print(f"| feed p99 (ms) | {p99['off']:.2f} | {p99['on']:.2f} | {p99['on'] / p99['off']:.3f} | - | - |")
    print(f"| ImpressionLog.log per call (us, 2,000 calls) | - | {per_call_us:.1f} | "
          f"{per_call_us / 1000 / p50['off']:.4f} of p50 | - | - |")
    print(f"\nimpression log: {stats}; before: {before}; after: {after}; pid {os.getpid()}")


if __name__ == "__main__":
    main()
