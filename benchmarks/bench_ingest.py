"""Bulk ingest speed: 1,000,000 generated events into SQLite and PostgreSQL.

Prints a markdown table of events/s for the first load and for an idempotent re-load of the same file
(which must add nothing), with the 1-minute load average before and after each database's loads: a
figure taken while it was above 2.5 before the load (other jobs on the cores) is flagged "shared
machine"; the load itself keeps about two cores busy, which shows in the "after" value.
Run: ``python benchmarks/bench_ingest.py [--events N] [--json]``.
PostgreSQL is taken from RECSYS_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test);
a scratch database is created and dropped.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from recsys.config import Config, EventMapping, ItemMapping
from recsys.ingest import ingest_events, ingest_items
from recsys.store.db import make_engine, upgrade
from recsys.store.models import Event

PG_URL = os.environ.get("RECSYS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def generate(folder: Path, n_events: int, n_items: int, n_users: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    items = folder / "items.csv"
    with items.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["item_id", "title", "category"])
        w.writerows((f"I{i:06d}", f"Item {i}", f"c{i % 50}") for i in range(n_items))
    events = folder / "events.csv"
    users = rng.integers(0, n_users, n_events)
    its = np.minimum(rng.zipf(1.3, n_events), n_items) - 1
    ts = 1_600_000_000 + np.sort(rng.integers(0, 90 * 86400, n_events))
    types = np.array(["view", "click", "add_to_cart", "purchase"])[rng.choice(4, n_events, p=[0.6, 0.25, 0.1, 0.05])]
    with events.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["user_id", "item_id", "event_type", "timestamp"])
        for start in range(0, n_events, 100_000):
            sl = slice(start, start + 100_000)
            w.writerows(zip((f"U{u}" for u in users[sl]), (f"I{i:06d}" for i in its[sl]), types[sl], ts[sl]))
    return items, events


def run(url: str, items: Path, events: Path, n: int, tmp: Path) -> dict[str, float]:
    eng = make_engine(url)
    upgrade(eng)
    cfg = Config()
    ingest_items(eng, items, ItemMapping(id="item_id", title="title", category="category"), reject_path=tmp / "ri.jsonl")
    mapping = EventMapping(event_type="event_type")
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    first = ingest_events(eng, events, mapping, cfg.event_types, reject_path=tmp / "re.jsonl", chunk_size=cfg.ingest.chunk_size)
    t1 = time.perf_counter()
    again = ingest_events(eng, events, mapping, cfg.event_types, reject_path=tmp / "re.jsonl", chunk_size=cfg.ingest.chunk_size)
    t2 = time.perf_counter()
    with eng.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(Event)).scalar_one()
    eng.dispose()
    if first.inserted != n or again.inserted != 0 or stored != n:
        raise SystemExit(f"wrong counts on {url}: first {first.inserted}, again {again.inserted}, stored {stored}")
    return {
        "load_s": t1 - t0, "load_eps": n / (t1 - t0), "reload_s": t2 - t1, "reload_eps": n / (t2 - t1),
        "loadavg_before": load_before, "loadavg_after": os.getloadavg()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = ap.parse_args()
    results: dict[str, dict[str, float] | str] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        items, events = generate(tmp, args.events, args.items, args.users)
        results["sqlite"] = run(f"sqlite:///{tmp / 'bench.sqlite'}", items, events, args.events, tmp)
        name = f"recsys_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(make_url(PG_URL).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        except Exception as exc:  # noqa: BLE001 - reported in the table
            results["postgresql"] = f"skipped: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        else:
            try:
                results["postgresql"] = run(make_url(PG_URL).set(database=name).render_as_string(False), items, events, args.events, tmp)
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    if args.json:
        print(json.dumps({"events": args.events, "machine": machine, "results": results}, indent=2))
        return
    print(f"Bulk ingest of {args.events:,} generated events ({args.users:,} users, {args.items:,} items) on {machine}\n")
    print("| database | first load | events/s | re-load (adds 0) | events/s | target | load avg before / after |")
    print("| --- | ---: | ---: | ---: | ---: | --- | --- |")
    for db, r in results.items():
        if isinstance(r, str):
            print(f"| {db} | {r} | | | | | |")
        else:
            ok = "met" if r["load_eps"] >= 50_000 else "NOT met"
            busy = " (shared machine)" if r["loadavg_before"] > 2.5 else ""
            print(f"| {db} | {r['load_s']:.1f} s | {r['load_eps']:,.0f} | {r['reload_s']:.1f} s | {r['reload_eps']:,.0f} "
                  f"| >= 50,000/s: {ok} | {r['loadavg_before']:.2f} / {r['loadavg_after']:.2f}{busy} |")


if __name__ == "__main__":
    main()
