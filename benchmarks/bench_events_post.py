"""``POST /v1/events`` latency against the size of the user table: ~1k users vs 1M users.

A batch must cost what its own events cost, not what the tables hold (issue 11: the route used to read
every user id per request, 19.6 ms at 943 users and 716 ms at 300,943). For each user-table size the
script makes a fresh database (SQLite file, or a scratch PostgreSQL database with ``--postgres URL``),
loads 200 items and N users straight through SQL, and posts batches of 10 events (5 existing users, 5 new
ones) through the Flask app (test client: routing, validation, JSON, SQL; no network), in one thread.
It prints one markdown table: median and p95 latency per size and the ratio of the largest to the smallest.

    python benchmarks/bench_events_post.py [--users 1000 1000000] [--requests 200] [--postgres URL]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

KEY = "bench-key"
N_ITEMS = 200


@contextlib.contextmanager
def database(kind: str, tmp: Path, pg_url: str | None) -> Iterator[str]:
    """A fresh database URL: a SQLite file under ``tmp``, or a scratch PostgreSQL database (dropped after)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / f'events-{uuid.uuid4().hex[:8]}.sqlite'}"
        return
    assert pg_url is not None
    name = f"recsys_bench_events_{uuid.uuid4().hex[:10]}"
    admin = create_engine(make_url(pg_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def fill(engine: Any, n_users: int) -> float:
    """Load the items and ``n_users`` users straight through SQL; returns the seconds it took."""
    t0 = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO items (external_id, title, description, attributes, available, content_hash, created_at, "
                          "updated_at) VALUES (:e, :t, '', '{}', true, 'h', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                     [{"e": f"I{i:05d}", "t": f"item {i}"} for i in range(N_ITEMS)])
        step = 100_000
        for start in range(0, n_users, step):
            conn.execute(text("INSERT INTO users (external_id, attributes, created_at) VALUES (:e, '{}', CURRENT_TIMESTAMP)"),
                         [{"e": f"U{i:08d}"} for i in range(start, min(n_users, start + step))])
    return time.perf_counter() - t0


def measure(url: str, data_dir: Path, n_users: int, n_requests: int) -> dict[str, Any]:
    from recsys.config import load_config
    from recsys.serving import Runtime
    from recsys.store.db import make_engine, upgrade
    from services.app import create_app

    engine = make_engine(url)
    upgrade(engine)
    fill_s = fill(engine, n_users)
    config = load_config(env={"RECSYS_DATA_DIR": str(data_dir), "RECSYS_DATABASE_URL": url,
                              "RECSYS_SERVICE_API_KEYS": f"[{KEY}]"})
    rt = Runtime(config, engine)
    rt.refresh_if_changed = lambda *a, **k: False  # type: ignore[method-assign]  # no catalogue to load: writes only
    client = create_app(config, rt).test_client()
    times = []
    for r in range(n_requests + 10):
        events = [{"user_id": f"U{(r * 7919 + j * 104729) % n_users:08d}", "item_id": f"I{(r + j) % N_ITEMS:05d}",
                   "event_type": "view", "timestamp": 1_700_000_000 + r} for j in range(5)]
        events += [{"user_id": f"new-{n_users}-{r}-{j}", "item_id": f"I{(r * 3 + j) % N_ITEMS:05d}",
                    "event_type": "click", "timestamp": 1_700_000_000 + r} for j in range(5)]
        t0 = time.perf_counter()
        resp = client.post("/v1/events", json={"events": events}, headers={"X-API-Key": KEY})
        dt = time.perf_counter() - t0
        if resp.status_code != 200 or resp.json["inserted"] != 10:
            raise RuntimeError(f"unexpected answer {resp.status_code}: {resp.json}")
        if r >= 10:  # the first ten warm up the connection pool and the code paths
            times.append(dt)
    engine.dispose()
    times.sort()
    return {"users": n_users, "fill_s": fill_s, "median_ms": 1000 * statistics.median(times),
            "p95_ms": 1000 * times[int(0.95 * (len(times) - 1))], "n": len(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, nargs="+", default=[1000, 1_000_000])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--postgres", metavar="URL", help="also measure on scratch databases of this PostgreSQL server")
    args = ap.parse_args()
    kinds = ["sqlite"] + (["postgresql"] if args.postgres else [])
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="recsys-bench-events-") as tmp:
        for kind in kinds:
            for n in args.users:
                with database(kind, Path(tmp), args.postgres) as url:
                    res = measure(url, Path(tmp) / f"data-{kind}-{n}", n, args.requests)
                rows.append({"db": kind, **res})
                print(f"# {kind} {n:,} users: median {res['median_ms']:.2f} ms", file=sys.stderr)
    print("| database | users in the table | POST /v1/events median (ms) | p95 (ms) | requests | ratio of medians to the smallest table |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind in kinds:
        mine = [r for r in rows if r["db"] == kind]
        base = min(mine, key=lambda r: r["users"])["median_ms"]
        for r in mine:
            print(f"| {kind} | {r['users']:,} | {r['median_ms']:.2f} | {r['p95_ms']:.2f} | {r['n']} | {r['median_ms'] / base:.2f} |")
    load_after = os.getloadavg()
    print(f"\nBatches of 10 events (5 known users, 5 new) through the Flask test client, one thread; "
          f"{os.cpu_count()} CPU cores, load average {load_before[0]:.2f} before / {load_after[0]:.2f} after (shared machine).")


if __name__ == "__main__":
    main()
