"""Benchmark: SQL -> interaction matrix, and implicit's fit, on generated and real events.

1. ``--events`` generated events (default 1,000,000; Zipf-popular items, four event types) are bulk-inserted
   into a SQLite file (once; reused when it exists); then the time of ``matrix_from_sql`` (the streamed
   SELECT, weights, repeats, CSR) is printed beside implicit ALS's own fit time on that matrix.
   Target: matrix <= 3 s for 1M events.
2. The full MovieLens 100K set (``../shared/data``) is loaded into a fresh SQLite file and ``recsys train``'s
   pipeline (``train_from_sql``: matrix + ALS fit + artifact) is timed. Target: <= 30 s on 2 cores.

Run: ``python benchmarks/bench_train.py [--events 1000000] [--threads 2] [--repeat 3] [--skip-movielens] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import Engine, insert

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recsys.cf.matrix import apply_confidence  # noqa: E402
from recsys.cf.model import fit_factors  # noqa: E402
from recsys.cf.sql import matrix_from_sql  # noqa: E402
from recsys.config import Config  # noqa: E402
from recsys.store.db import make_engine, upgrade  # noqa: E402
from recsys.store.models import Event, Item, User  # noqa: E402

TYPES = ("view", "click", "add_to_cart", "purchase")


def _bulk(engine: Engine, table: type, rows: list[dict], batch: int = 100_000) -> None:
    with engine.begin() as conn:
        for start in range(0, len(rows), batch):
            conn.execute(insert(table), rows[start : start + batch])


def generated_db(path: Path, n_events: int, n_users: int, n_items: int, seed: int = 0) -> Engine:
    """A SQLite file with ``n_events`` generated events (built once, then reused)."""
    engine = make_engine(f"sqlite:///{path}")
    if path.is_file() and path.stat().st_size > 0:
        return engine
    upgrade(engine)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    _bulk(engine, Item, [{"external_id": f"item{i}", "title": "", "description": "", "attributes": {},
                          "available": True, "content_hash": "-"} for i in range(n_items)])
    _bulk(engine, User, [{"external_id": f"user{u}", "attributes": {}} for u in range(n_users)])
    users = rng.integers(1, n_users + 1, n_events)
    items = (rng.zipf(1.2, n_events) - 1) % n_items + 1
    types = rng.integers(0, len(TYPES), n_events)
    ts = 1_600_000_000 + rng.integers(0, 365 * 86_400, n_events)
    rows = [{"event_key": f"e{k}", "user_id": int(users[k]), "item_id": int(items[k]), "event_type": TYPES[types[k]],
             "value": None, "ts": int(ts[k])} for k in range(n_events)]
    _bulk(engine, Event, rows)
    print(f"generated {n_events:,} events in {time.perf_counter() - t0:.1f}s -> {path}")
    return engine


def movielens_db(path: Path, shared: Path) -> Engine:
    """The MovieLens 100K events in a fresh SQLite file (items from items.csv, one event type: rating)."""
    import pandas as pd

    folder = shared / "movielens-100k-posters"
    items = pd.read_csv(folder / "items.csv", dtype=str, keep_default_na=False)
    events = pd.read_csv(folder / "events.csv")
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    _bulk(engine, Item, [{"external_id": i, "title": t, "description": "", "attributes": {}, "available": True,
                          "content_hash": "-"} for i, t in zip(items["item_id"], items["title"])])
    _bulk(engine, User, [{"external_id": str(u), "attributes": {}} for u in sorted(events["user_id"].unique())])
    # internal ids follow insertion order: item row r -> id r + 1; users sorted -> id rank + 1
    item_id = {ext: k + 1 for k, ext in enumerate(items["item_id"])}
    user_id = {u: k + 1 for k, u in enumerate(sorted(events["user_id"].unique()))}
    columns = events[["user_id", "item_id", "rating", "timestamp"]].itertuples(index=False)
    _bulk(engine, Event, [{"event_key": f"ml{k}", "user_id": user_id[u], "item_id": item_id[str(i)],
                           "event_type": "rating", "value": float(r), "ts": int(t)}
                          for k, (u, i, r, t) in enumerate(columns)])
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=2, help="implicit threads (the target is for 2 cores)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=REPO / ".recsys" / "bench")
    parser.add_argument("--skip-movielens", action="store_true")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the figures as JSON here")
    args = parser.parse_args()

    config = Config()
    cfg = config.cf.model_copy(update={"num_threads": args.threads})
    args.workdir.mkdir(parents=True, exist_ok=True)
    db = args.workdir / f"events-{args.events}-{args.users}-{args.items}.sqlite"
    engine = generated_db(db, args.events, args.users, args.items)
    print(f"load average before: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores "
          "(wall times stretch when other processes share the cores; CPU times do not)")
    times, cpu = [], []
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        matrix = matrix_from_sql(engine, cfg, config.event_types)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    t0, c0 = time.perf_counter(), time.process_time()
    fit_factors(apply_confidence(matrix.weights, cfg), cfg)
    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"SQL -> matrix, {args.events:,} events (SQLite): median wall {statistics.median(times):.2f}s, "
          f"CPU {statistics.median(cpu):.2f}s (runs {', '.join(f'{t:.2f}' for t in times)}); "
          f"{matrix.weights.shape[0]:,} x {matrix.weights.shape[1]:,}, {matrix.weights.nnz:,} pairs  [target <= 3 s]")
    print(f"implicit ALS fit ({cfg.factors} factors, {cfg.iterations} iterations, {args.threads} threads): "
          f"wall {fit_s:.2f}s, CPU {fit_cpu:.2f}s")
    figures: dict[str, object] = {
        "bench": "train", "events": args.events, "users": args.users, "items": args.items, "threads": args.threads,
        "cpus": os.cpu_count(), "load_average": list(os.getloadavg()),
        "matrix_s": statistics.median(times), "matrix_cpu_s": statistics.median(cpu), "matrix_runs_s": times,
        "matrix_shape": list(matrix.weights.shape), "matrix_nnz": int(matrix.weights.nnz),
        "als_fit_s": fit_s, "als_fit_cpu_s": fit_cpu, "movielens": None,
    }
    figures["movielens"] = movielens_figures(args, config, cfg)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


def movielens_figures(args: argparse.Namespace, config: Config, cfg: object) -> dict[str, float] | str:
    """Time ``recsys train``'s pipeline on MovieLens 100K; a string says why it was skipped."""
    if args.skip_movielens:
        return "skipped (--skip-movielens)"
    shared = Path(os.environ.get("RECSYS_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not (shared / "movielens-100k-posters" / "events.csv").is_file():
        print(f"MovieLens training skipped: shared data not found at {shared}")
        return f"skipped: shared data not found at {shared}"
    from recsys.cf.train import train_from_sql

    with tempfile.TemporaryDirectory() as tmp:
        ml = movielens_db(Path(tmp) / "ml.sqlite", shared)
        ml_config = config.model_copy(update={"data_dir": Path(tmp), "cf": cfg})
        t0, c0 = time.perf_counter(), time.process_time()
        result = train_from_sql(ml, ml_config, version="bench")
        total, total_cpu = time.perf_counter() - t0, time.process_time() - c0
        m = result.metrics
        print(f"MovieLens 100K training (recsys train pipeline, {args.threads} threads): wall {total:.2f}s, "
              f"CPU {total_cpu:.2f}s "
              f"(matrix {m['matrix_seconds']:.2f}s, fit {m['fit_seconds']:.2f}s; {m['events']:,} events)"
              "  [target <= 30 s]")
        ml.dispose()
    return {"train_s": total, "train_cpu_s": total_cpu, "matrix_s": m["matrix_seconds"], "fit_s": m["fit_seconds"],
            "events": m["events"]}


if __name__ == "__main__":
    main()
