"""The service over HTTP under load, beside a bare Flask endpoint and beside the same calls in process.

1. Prepares a catalogue in a temporary data directory (SQLite file; ``--database-url`` for PostgreSQL):
   ``--catalogue demo`` is the generated demo shop, loaded, embedded, aligned and CF-trained as ``recsys
   demo`` does (``--encoders tiny`` swaps in tiny random encoders for a fast smoke run);
   ``--catalogue synthetic`` is :func:`prepare_synthetic` (``--items`` random items with clustered
   vectors written straight into ``item_embeddings``, generated users and events, CF trained).
2. Times ``Runtime.similar_items`` and ``Runtime.recommend`` in process (``Runtime.from_config``).
3. Serves the bare Flask baseline app (``bench_http_baseline.py``), then the real service
   (``gunicorn 'services.wsgi:app'`` with ``$RECSYS_CONFIG`` pointing at the prepared data directory), then
   the baseline again (its figures are the mean of the two runs, so that a drift in the machine's load
   favours neither side; ``--baseline-runs 1``: once, before). Both are served with the production worker
   settings (README: ``gunicorn -c python:services.gunicorn_conf -w 4``: the app preloaded in the master, 4 sync
   workers forked from it; ``--workers`` changes the count). It measures the baseline's endpoint and
   ``GET /v1/items/<id>/similar?k=10`` and ``GET /v1/users/<id>/recommendations?k=10`` spread over the
   catalogue's items and users: p50 / p99 at ``--rate`` req/s (open loop, latency from the scheduled
   send time) and max req/s (closed loop, ``--concurrency`` connections).

Prints a markdown table, and the memory of the service's master and each worker (RSS and PSS from
``/proc/<pid>/smaps_rollup``) and their total PSS when ready and after the load runs; ``--json PATH`` writes
the figures. The load generator runs on the same machine
as the server (2 cores on the development machine), which the output says.

    python benchmarks/bench_service.py                         # demo shop, 10 s per measurement
    python benchmarks/bench_service.py --quick                 # small shop, tiny encoders, 2 s each
    python benchmarks/bench_service.py --catalogue synthetic --items 20000
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (str(REPO), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from bench_http_baseline import measure_baseline  # noqa: E402
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
from sqlalchemy import Engine, func, insert, select  # noqa: E402

from recsys.config import Config, EventMapping, ItemMapping, load_config  # noqa: E402
from recsys.store.db import engine_from_config, upgrade  # noqa: E402
from recsys.store.models import Event, Item, ItemEmbedding, User  # noqa: E402

ENDPOINTS: dict[str, str] = {
    "similar": "/v1/items/{id}/similar?k=10",
    "recommendations": "/v1/users/{id}/recommendations?k=10",
}
"""Endpoint name -> path template; ``{id}`` is an item id for ``similar``, a user id otherwise."""


# ------------------------------------------------------------------------------------------ catalogues
def write_config(data_dir: Path, *, database_url: str | None = None, text_encoder: str | None = None) -> Config:
    """Write ``data_dir/config.yaml`` (data directory, database, text encoder) and load it (no env overrides)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"data_dir: {json.dumps(str(data_dir))}"]
    if database_url:
        lines += ["database:", f"  url: {json.dumps(database_url)}"]
    if text_encoder:
        lines += ["encoders:", "  text:", f"    name: {json.dumps(text_encoder)}", "    batch_size: 16",
                  "    max_length: 32"]
    path = data_dir / "config.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_config(path, env={})


def prepare_demo(data_dir: Path, *, n_items: int = 300, n_users: int = 200, seed: int = 0, encoders: str = "default",
                 database_url: str | None = None) -> Config:
    """The demo shop, prepared as ``recsys demo`` does: ingest, embed, align, train CF.

    Args:
        encoders: ``default`` (the offline default text and image encoders, as ``recsys demo``) or ``tiny``
            (tiny random encoders saved under ``data_dir``: a smoke run whose vectors mean nothing).
    """
    from recsys.align.settings import AlignConfig
    from recsys.align.store import train_from_store
    from recsys.cf.train import train_from_sql
    from recsys.demo.catalogue import generate_demo
    from recsys.embed import run_embed
    from recsys.encoders.factory import build_image_encoder, build_text_encoder
    from recsys.ingest import ingest_events, ingest_items

    if encoders not in ("default", "tiny"):
        raise ValueError(f"encoders must be 'default' or 'tiny', got {encoders!r}")
    tiny_path = None
    if encoders == "tiny":
        from recsys.encoders.testing import save_tiny_text_model, tiny_image_encoder, tiny_text_encoder

        tiny_path = save_tiny_text_model(data_dir / "tiny-text")
    config = write_config(data_dir, database_url=database_url, text_encoder=str(tiny_path) if tiny_path else None)
    engine = engine_from_config(config)
    upgrade(engine)
    files = generate_demo(data_dir / "demo", n_items=n_items, n_users=n_users, seed=seed)
    preset = config.ingest.presets["demo"]
    rejects = data_dir / "rejects"
    ingest_items(engine, files.items_csv, preset.items, reject_path=rejects / "items.jsonl")
    ingest_events(engine, files.events_csv, preset.events, config.event_types, reject_path=rejects / "events.jsonl")
    if tiny_path is not None:
        text, image = tiny_text_encoder(tiny_path), tiny_image_encoder()
        align = AlignConfig(dim=16, hidden_dim=32, epochs=3, ensemble=1, min_items=10, batch_size=16)
    else:
        text = build_text_encoder(config.encoders.text, config.encoders.device)
        image = build_image_encoder(config.encoders.image, config.encoders.device)
        align = config.align
    run_embed(engine, config.encoders, text_encoder=text, image_encoder=image)
    train_from_store(engine, config, align, versions=(text.version, image.version), text_encoder=text)
    train_from_sql(engine, config)
    engine.dispose()
    return config


def prepare_synthetic(n_items: int, dim: int, data_dir: Path, *, n_users: int | None = None, n_events: int | None = None,
                      n_categories: int = 50, seed: int = 0, database_url: str | None = None,
                      text_encoder: str | None = None) -> Config:
    """A synthetic catalogue of ``n_items`` for the 1M-item service benchmark .

    Done here:

    - items (``S0000000``...: title, category ``c<i % n_categories>``, price) and a Zipf-skewed event log
      (``n_users``, default ``n_items // 10`` capped to 50,000; ``n_events``, default
      ``max(n_items, 20 * n_users)``; four event types, ordered in time) are written as CSV files under
      ``data_dir/synthetic`` and loaded through the bulk ingest paths (``ingest_items``, ``ingest_events``;
      the same rules as ``recsys ingest``);
    - ``(n_items, dim)`` clustered unit vectors (:func:`recsys.index.synthetic.clustered_vectors`) are
      inserted straight into ``item_embeddings`` as the *text* vectors of the configured text encoder
      version (little-endian float32 blobs carrying each item's current ``content_hash``, the format of
      :mod:`recsys.embed.store`), so the runtime loads them as it would real ones;
    - the feed model is fitted from the events with fixed settings, and the serving state is loaded once
      so that the similar-items and user-items indexes are built and published before the workers start.

    Limits: no alignment and no images (the runtime serves the raw synthetic vectors as the text space, so
    ``POST /v1/search`` is not measured and would fail when ``dim`` differs from the text encoder's); the text
    encoder's weights are loaded only to read its version string; ``ingest_items`` parses items row by row
    (minutes at 1M rows). The service's gunicorn master loads the state once and its workers share it
    (``preload_app``, see ``services/gunicorn_conf.py``) until one of them reloads.

    Returns:
        The configuration written to ``data_dir/config.yaml``.
    """
    from recsys.encoders.factory import build_text_encoder
    from recsys.index.synthetic import clustered_vectors
    from recsys.ingest import ingest_events, ingest_items
    from recsys.ranking.hybrid import HybridParams
    from recsys.recommend.model import fit_feed_model, save_feed_model

    if n_items < 10 or dim < 2:
        raise ValueError(f"n_items must be >= 10 and dim >= 2, got {n_items}, {dim}")
    n_users = n_users if n_users is not None else max(100, min(50_000, n_items // 10))
    n_events = n_events if n_events is not None else max(n_items, 20 * n_users)
    config = write_config(data_dir, database_url=database_url, text_encoder=text_encoder)
    engine = engine_from_config(config)
    upgrade(engine)
    folder = data_dir / "synthetic"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    items_csv = folder / "items.csv"
    with items_csv.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["item_id", "title", "category", "price"])
        prices = np.round(rng.uniform(5, 200, n_items), 2)
        w.writerows((f"S{i:07d}", f"Synthetic item {i}", f"c{i % n_categories}", prices[i]) for i in range(n_items))
    events_csv = folder / "events.csv"
    users = rng.integers(0, n_users, n_events)
    items = (rng.zipf(1.2, n_events) - 1) % n_items
    ts = 1_700_000_000 + np.sort(rng.integers(0, 90 * 86_400, n_events))
    types = np.array(["view", "click", "add_to_cart", "purchase"])[rng.choice(4, n_events, p=[0.6, 0.25, 0.1, 0.05])]
    with events_csv.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["user_id", "item_id", "event_type", "timestamp"])
        for start in range(0, n_events, 100_000):
            sl = slice(start, start + 100_000)
            w.writerows(zip((f"V{u:06d}" for u in users[sl]), (f"S{i:07d}" for i in items[sl]), types[sl], ts[sl],
                             strict=True))
    rejects = data_dir / "rejects"
    ingest_items(engine, items_csv, ItemMapping(id="item_id", title="title", category="category", price="price"),
                 reject_path=rejects / "items.jsonl", chunk_size=config.ingest.chunk_size)
    ingest_events(engine, events_csv, EventMapping(event_type="event_type"), config.event_types,
                  reject_path=rejects / "events.jsonl", chunk_size=config.ingest.chunk_size)
    t1 = time.perf_counter()
    version = build_text_encoder(config.encoders.text, config.encoders.device).version
    write_synthetic_vectors(engine, version, clustered_vectors(n_items, dim, seed=seed))
    t2 = time.perf_counter()
    # the feed model with fixed settings (choosing them on validation splits of 1M items is not what is
    # measured here): CF + cosine to the content profile + popularity
    fixed = HybridParams(recency_tau=10.0, recency_beta=10.0, profile_tau=10.0, profile_gamma=0.0, warm_cf=1.0,
                         warm_content=0.5, warm_pop=0.25, cold_cf=1.0, cold_content=1.0, cold_profile_tau=10.0,
                         cold_offset=-0.5)
    save_feed_model(engine, config, fit_feed_model(engine, config, params=fixed))
    t3 = time.perf_counter()
    # load the serving state once here: it builds and publishes the indexes, which the workers then load
    from recsys.serving import Runtime

    rt = Runtime.from_config(config)
    ready, checks = rt.readiness()
    if not ready:
        raise RuntimeError(f"the synthetic service is not ready: {checks}")
    del rt
    print(f"synthetic catalogue: {n_items:,} items, {n_users:,} users, {n_events:,} events ingested in {t1 - t0:.1f} s; "
          f"{n_items:,} x {dim} vectors ({version}) in {t2 - t1:.1f} s; feed model in {t3 - t2:.1f} s; "
          f"serving state + published indexes in {time.perf_counter() - t3:.1f} s",
          file=sys.stderr)
    engine.dispose()
    return config


def write_synthetic_vectors(engine: Engine, encoder_version: str, vectors: np.ndarray, *, batch: int = 20_000) -> None:
    """Insert ``vectors`` (``(n_items, dim)`` float32, row ``r`` = the ``r``-th item by internal id) as text
    vectors of ``encoder_version``, tagged with each item's current content hash."""
    with engine.connect() as conn:
        rows = conn.execute(select(Item.id, Item.content_hash).order_by(Item.id)).all()
    if len(rows) != len(vectors):
        raise ValueError(f"{len(vectors)} vectors for {len(rows)} items in the database")
    dim = int(vectors.shape[1])
    blobs = np.ascontiguousarray(vectors, dtype="<f4")
    with engine.begin() as conn:
        for start in range(0, len(rows), batch):
            conn.execute(insert(ItemEmbedding), [
                {"item_id": iid, "space": "text", "encoder": encoder_version, "content_hash": h, "dim": dim,
                 "vector": blobs[start + k].tobytes(), "error": None}
                for k, (iid, h) in enumerate(rows[start : start + batch])
            ])


def sample_ids(config: Config, n: int = 5000, seed: int = 0) -> tuple[list[str], list[str]]:
    """Up to ``n`` item ids that have a vector, and up to ``n`` user ids that have events, shuffled."""
    engine = engine_from_config(config)
    with engine.connect() as conn:
        items = list(conn.execute(select(Item.external_id).where(Item.id.in_(select(ItemEmbedding.item_id)))).scalars())
        users = list(conn.execute(select(User.external_id).where(User.id.in_(select(Event.user_id)))).scalars())
    engine.dispose()
    rng = np.random.default_rng(seed)

    def pick(ids: list[str]) -> list[str]:
        return [ids[i] for i in rng.permutation(len(ids))[:n]]

    return pick(items), pick(users)


def vector_dim(config: Config) -> int:
    """Dimension of the stored text vectors (0 without any)."""
    engine = engine_from_config(config)
    with engine.connect() as conn:
        dim = conn.execute(select(ItemEmbedding.dim).where(ItemEmbedding.space == "text").limit(1)).scalar()
    engine.dispose()
    return int(dim or 0)


def catalogue_counts(config: Config) -> dict[str, int]:
    engine = engine_from_config(config)
    with engine.connect() as conn:
        out = {name: int(conn.execute(select(func.count()).select_from(model)).scalar_one())
               for name, model in (("items", Item), ("users", User), ("events", Event))}
    engine.dispose()
    return out


# ------------------------------------------------------------------------------------------ measuring
def in_process(config: Config, items: list[str], users: list[str], calls: int) -> dict[str, dict[str, float]]:
    """p50 / p99 wall milliseconds of ``Runtime.similar_items`` and ``Runtime.recommend`` (k=10)."""
    from recsys.serving import Runtime

    rt = Runtime.from_config(config)
    ready, checks = rt.readiness()
    if not ready:
        raise RuntimeError(f"the runtime is not ready on the prepared catalogue: {checks}")
    calls_by_name: dict[str, Callable[[int], object]] = {
        "similar": lambda i: rt.similar_items(items[i % len(items)], k=10),
        "recommendations": lambda i: rt.recommend(users[i % len(users)], k=10),
    }
    out = {}
    for name, fn in calls_by_name.items():
        for i in range(min(20, calls)):
            fn(i)
        ms = []
        for i in range(calls):
            t = time.perf_counter()
            fn(i)
            ms.append((time.perf_counter() - t) * 1e3)
        out[name] = {"calls": calls, "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                     "mean_ms": statistics.fmean(ms)}
    rt.engine.dispose()
    return out


UPSERT_KEY = "bench-service-key"
"""API key the benchmark's server accepts (``RECSYS_SERVICE_API_KEYS``), for the ``--upserts`` PUTs."""


def measure_upserts(base_url: str, n: int, *, workers: int, timeout_s: float = 300.0) -> list[dict[str, Any]]:
    """PUT ``n`` new items one after another; for each, the PUT's time and ``servable`` answer, and the time
    from sending the PUT until ``GET /v1/items/<id>/similar`` answered 200 on ``4 x workers`` fresh
    connections in a row (every worker serves it: gunicorn hands each connection to whichever worker
    accepts it)."""
    import requests

    out = []
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for i in range(n):
        item = f"BENCH-PUT-{stamp}-{i}"
        body = {"title": f"Benchmark walnut lamp {i} {stamp}", "description": "A lamp put during the benchmark",
                "category": "bench"}
        t0 = time.perf_counter()
        put = requests.put(f"{base_url}/v1/items/{item}", json=body, headers={"X-API-Key": UPSERT_KEY}, timeout=120)
        put_s = time.perf_counter() - t0
        if put.status_code != 200:
            raise RuntimeError(f"PUT {item} answered {put.status_code}: {put.text[:500]}")
        in_a_row, polls = 0, 0
        while in_a_row < 4 * workers:
            got = requests.get(f"{base_url}/v1/items/{item}/similar", params={"k": 10}, timeout=60)
            polls += 1
            in_a_row = in_a_row + 1 if got.status_code == 200 else 0
            if time.perf_counter() - t0 > timeout_s:
                raise RuntimeError(f"{item} was not served by every worker within {timeout_s} s")
            if got.status_code != 200:
                time.sleep(0.05)
        out.append({"item": item, "put_s": put_s, "servable": put.json().get("servable"),
                    "all_workers_s": time.perf_counter() - t0, "polls": polls})
        print(f"PUT {item}: answered in {put_s:.2f} s (servable: {put.json().get('servable')}), "
              f"served by every worker {out[-1]['all_workers_s']:.2f} s after the PUT", file=sys.stderr)
    return out


def measure_service(config: Config, items: list[str], users: list[str], *, rate: float, duration_s: float,
                    concurrency: int, connections: int, log_path: Path,
                    worker_env: dict[str, str] | None = None, upserts: int = 0,
                    gunicorn_args: tuple[str, ...] = SERVICE_GUNICORN_ARGS) -> dict[str, Any]:
    """Serve ``services.wsgi:app`` on the prepared catalogue and load each endpoint open- then closed-loop;
    then (``upserts``) put new items and time until every worker serves them (:func:`measure_upserts`).
    ``out["memory"]``: the master's and each worker's RSS and PSS (``GunicornServer.memory``) when ready, after
    the load runs and after the upserts, and ``ready_s`` (start to every worker ready).

    Args:
        worker_env: extra environment variables for gunicorn (e.g. ``OPENBLAS_NUM_THREADS=1``).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env.update(worker_env or {})
    env["RECSYS_CONFIG"] = str(Path(config.data_dir) / "config.yaml")
    env["RECSYS_SERVICE_API_KEYS"] = json.dumps([UPSERT_KEY])
    ids = {"similar": items, "recommendations": users}
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    memory: dict[str, Any] = {}
    with gunicorn_server("services.wsgi:app", log_path=log_path, cwd=REPO, env=env, ready_path="/readyz",
                         gunicorn_args=gunicorn_args, start_timeout_s=900.0) as server:
        ready_s = time.perf_counter() - t0
        print(f"service ready in {ready_s:.1f} s ({len(server.worker_pids())} workers)", file=sys.stderr)
        memory["ready"] = server.memory()
        print_memory("memory when ready", memory["ready"])
        for name, template in ENDPOINTS.items():
            paths = [template.format(id=i) for i in ids[name]]
            opened = open_loop(server.base_url, paths, rate=rate, duration_s=duration_s, connections=connections,
                               server_cpu=server.cpu_seconds)
            closed = closed_loop(server.base_url, paths, concurrency=concurrency, duration_s=duration_s,
                                 server_cpu=server.cpu_seconds)
            out[name] = {"open": opened, "closed": closed}
        memory["loaded"] = server.memory()
        print_memory("memory after the load runs", memory["loaded"])
        if upserts:
            out["upserts"] = measure_upserts(server.base_url, upserts, workers=len(server.worker_pids()))
            memory["upserts"] = server.memory()
            print_memory("memory after the upserts (every worker reloaded)", memory["upserts"])
    out["memory"] = {**memory, "ready_s": ready_s}
    return out


def print_memory(title: str, m: dict[str, Any]) -> None:
    """One stderr line: master and per-worker RSS / PSS (MiB) and the service's total PSS."""
    mib = 1 << 20
    workers = ", ".join(f"{v['rss'] / mib:,.0f} / {v['pss'] / mib:,.0f}" for v in m["workers"].values())
    master = m["master"] or {"rss": 0, "pss": 0}
    print(f"{title}: master RSS / PSS {master['rss'] / mib:,.0f} / {master['pss'] / mib:,.0f} MiB; workers "
          f"{workers} MiB; total PSS {m['total_pss'] / mib:,.0f} MiB (sum of RSS {m['total_rss'] / mib:,.0f})",
          file=sys.stderr)


# ------------------------------------------------------------------------------------------ report
def _errors(r: LoadResult) -> str:
    return str(r.errors) if not r.errors else f"{r.errors} ({', '.join(f'{k}: {v}' for k, v in r.error_kinds.items())})"


def print_table(figures: dict[str, Any]) -> None:
    rate, conc = figures["rate"], figures["concurrency"]
    cat = figures["catalogue"]
    print(f"\n### Service under load: {cat['kind']} catalogue ({cat['items']:,} items, {cat['users']:,} users, "
          f"{cat['events']:,} events), gunicorn {' '.join(figures['gunicorn'])} (sync workers)"
          + "".join(f" {k}={v}" for k, v in figures.get("worker_env", {}).items()) + "\n")
    print(figures["machine"] + "\n")
    print(f"| endpoint | in process p50 / p99 ms | HTTP p50 / p99 ms at {rate:g} req/s | achieved req/s, errors "
          f"| max req/s (closed loop, {conc} conns) | p50 / p99 ms at max | max vs bare Flask |")
    print("|---|---|---|---|---|---|---|")
    base = figures.get("baseline")
    if base:
        runs = base["runs"]
        maxima = ", ".join(f"{r['closed']['achieved_rps']:,.0f}" for r in runs)
        each = f" (runs: {maxima})" if len(runs) > 1 else ""
        print(f"| bare Flask JSON endpoint (baseline{', mean of the runs before and after' if each else ''}) | - | "
              f"{fmt_ms(base['p50_ms'])} / {fmt_ms(base['p99_ms'])} | {base['achieved_rps']:,.0f}, {base['errors']} | "
              f"{base['max_rps']:,.0f}{each} | {fmt_ms(base['max_p50_ms'])} / {fmt_ms(base['max_p99_ms'])} | 100% |")
    for e in figures["endpoints"].values():
        ip, o, c = e["in_process"], e["open"], e["closed"]
        share = f"{100 * c['achieved_rps'] / base['max_rps']:.0f}%" if base else "-"
        print(f"| GET {e['path']} | {fmt_ms(ip['p50_ms'])} / {fmt_ms(ip['p99_ms'])} | {fmt_ms(o['p50_ms'])} / "
              f"{fmt_ms(o['p99_ms'])} | {o['achieved_rps']:,.0f}, {o['errors']} | {c['achieved_rps']:,.0f} "
              f"({c['errors']} errors) | {fmt_ms(c['p50_ms'])} / {fmt_ms(c['p99_ms'])} | {share} |")
    if figures.get("memory"):
        print_memory_table(figures["memory"])
    cpu = [f"{name} {100 * e['closed']['client_cpu_s'] / e['closed']['duration_s']:.0f}%"
           for name, e in figures["endpoints"].items()]
    for u in figures.get("upserts") or []:
        print(f"\nPUT /v1/items/{u['item']}: answered in {u['put_s']:.2f} s (servable: {u['servable']}); served by "
              f"every worker {u['all_workers_s']:.2f} s after the PUT.")
    print(f"\nLoad generator CPU during the closed-loop runs (of one core): {', '.join(cpu)}; "
          f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}.")


def trim_memory() -> None:
    """Collect garbage and give freed heap back to the system (glibc ``malloc_trim``), so that this process's
    peak while preparing does not stay resident beside the servers it starts; a no-op elsewhere."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def print_memory_table(memory: dict[str, Any]) -> None:
    """Per process RSS / PSS (MiB) at each point measured, and the service's total PSS."""
    mib = 1 << 20
    print("\n| service memory (MiB) | master RSS / PSS | each worker RSS / PSS | total PSS (master + workers) | sum of RSS |")
    print("|---|---|---|---|---|")
    for key, title in (("ready", "every worker ready"), ("loaded", "after the load runs"),
                       ("upserts", "after the upserts (every worker reloaded)")):
        m = memory.get(key)
        if not m:
            continue
        master = m["master"] or {"rss": 0, "pss": 0}
        workers = ", ".join(f"{v['rss'] / mib:,.0f} / {v['pss'] / mib:,.0f}" for v in m["workers"].values())
        print(f"| {title} | {master['rss'] / mib:,.0f} / {master['pss'] / mib:,.0f} | {workers} | "
              f"**{m['total_pss'] / mib:,.0f}** | {m['total_rss'] / mib:,.0f} |")
    print(f"\nService start to every worker ready: {memory['ready_s']:.1f} s.")


def summarise_baseline(runs: list[dict[str, LoadResult]]) -> dict[str, Any] | None:
    """The bare-Flask figures: means over the runs (``None`` without any), and each run as measured."""
    if not runs:
        return None

    def mean(mode: str, key: str) -> float | None:
        values = [getattr(r[mode], key) for r in runs]
        return None if any(v is None for v in values) else statistics.fmean(values)

    return {
        "max_rps": mean("closed", "achieved_rps"), "max_p50_ms": mean("closed", "p50_ms"),
        "max_p99_ms": mean("closed", "p99_ms"), "p50_ms": mean("open", "p50_ms"), "p99_ms": mean("open", "p99_ms"),
        "achieved_rps": mean("open", "achieved_rps"), "errors": sum(r["open"].errors + r["closed"].errors for r in runs),
        "runs": [{"open": r["open"].to_dict(), "closed": r["closed"].to_dict()} for r in runs],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--catalogue", choices=["demo", "synthetic"], default="demo")
    ap.add_argument("--items", type=int, default=None, help="demo: 300; synthetic: 1,000,000")
    ap.add_argument("--users", type=int, default=None, help="demo: 200; synthetic: items / 10, at most 50,000")
    ap.add_argument("--dim", type=int, default=128, help="synthetic vector dimension")
    ap.add_argument("--encoders", choices=["default", "tiny"], default=None,
                    help="demo: the offline default encoders (default) or tiny random ones (--quick)")
    ap.add_argument("--database-url", default=None, help="default: a SQLite file in the data directory")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="prepare here and keep it; reused as it is when it holds a config.yaml "
                         "(default: a temporary folder)")
    ap.add_argument("--rate", type=float, default=200.0, help="open-loop request rate (req/s)")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per HTTP measurement")
    ap.add_argument("--concurrency", type=int, default=16, help="closed-loop concurrent connections")
    ap.add_argument("--connections", type=int, default=32, help="open-loop connection threads")
    ap.add_argument("--calls", type=int, default=500, help="in-process calls per function")
    ap.add_argument("--no-baseline", action="store_true", help="skip the bare Flask baseline")
    ap.add_argument("--baseline-runs", type=int, choices=[1, 2], default=None,
                    help="measure the baseline before the service only (1) or before and after (2; default, 1 with --quick)")
    ap.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for the service's gunicorn (repeatable), e.g. OPENBLAS_NUM_THREADS=1")
    ap.add_argument("--upserts", type=int, default=0, metavar="N",
                    help="after the load runs, PUT N new items (they stay in the catalogue) and time until every "
                         "worker serves each; a synthetic catalogue needs --dim equal to its text encoder's "
                         "dimension (e.g. --encoders tiny --dim 32)")
    ap.add_argument("--workers", type=int, default=None,
                    help="gunicorn workers of the service and the baseline (default: the production -w 4)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 100 items, tiny encoders, 2 s per measurement")
    ap.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the figures as JSON here")
    args = ap.parse_args()
    exit_on_sigterm()
    if args.quick:
        args.duration, args.calls = min(args.duration, 2.0), min(args.calls, 100)
        args.items = args.items or (100 if args.catalogue == "demo" else 2000)
        args.users = args.users or 60
        args.encoders = args.encoders or "tiny"
        args.baseline_runs = args.baseline_runs or 1

    gunicorn_args = SERVICE_GUNICORN_ARGS
    if args.workers is not None:
        gunicorn_args = (*SERVICE_GUNICORN_ARGS[:SERVICE_GUNICORN_ARGS.index("-w")], "-w", str(args.workers))
    worker_env = {}
    for item in args.worker_env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            ap.error(f"--worker-env takes KEY=VALUE, got {item!r}")
        worker_env[key] = value
    with tempfile.TemporaryDirectory(prefix="bench_service_") as tmp:
        data_dir = (args.data_dir or Path(tmp) / "data").resolve()
        t0 = time.perf_counter()
        if args.data_dir and (data_dir / "config.yaml").is_file():
            print(f"reusing the catalogue prepared earlier in {data_dir} (delete it to prepare anew)", file=sys.stderr)
            config = load_config(data_dir / "config.yaml", env={})
        elif args.catalogue == "demo":
            config = prepare_demo(data_dir, n_items=args.items or 300, n_users=args.users or 200,
                                  encoders=args.encoders or "default", database_url=args.database_url)
        else:
            tiny = None
            if args.encoders == "tiny":
                from recsys.encoders.testing import save_tiny_text_model

                tiny = str(save_tiny_text_model(data_dir / "tiny-text"))
            config = prepare_synthetic(args.items or 1_000_000, args.dim, data_dir, n_users=args.users,
                                       database_url=args.database_url, text_encoder=tiny)
        prep_s = time.perf_counter() - t0
        print(f"prepared the {args.catalogue} catalogue in {prep_s:.1f} s under {data_dir}", file=sys.stderr)
        if args.upserts and args.catalogue == "synthetic":
            from recsys.encoders.factory import build_text_encoder

            enc_dim = build_text_encoder(config.encoders.text, config.encoders.device).dim
            stored = vector_dim(config)
            if enc_dim != stored:
                ap.error(f"--upserts: the catalogue's vectors have {stored} dimensions but its text encoder makes "
                         f"{enc_dim}; prepare it with --dim {enc_dim} (e.g. --encoders tiny --dim 32)")
        counts = catalogue_counts(config)
        items, users = sample_ids(config)
        ip = in_process(config, items, users, args.calls)
        baseline_runs: list[dict[str, LoadResult]] = []

        def baseline() -> None:
            if args.no_baseline:
                return
            baseline_runs.append(measure_baseline(rate=args.rate, duration_s=args.duration, concurrency=args.concurrency,
                                                  connections=args.connections, gunicorn_args=gunicorn_args))

        trim_memory()  # the catalogue's preparation and the in-process runtime: given back before the servers start
        baseline()
        log_path = Path(tmp) / "gunicorn-service.log"
        service = measure_service(config, items, users, rate=args.rate, duration_s=args.duration,
                                  concurrency=args.concurrency, connections=args.connections, log_path=log_path,
                                  worker_env=worker_env, upserts=args.upserts, gunicorn_args=gunicorn_args)
        upserts = service.pop("upserts", [])
        memory = service.pop("memory")
        if (args.baseline_runs or 2) == 2:
            baseline()

    figures: dict[str, Any] = {
        "bench": "service",
        "machine": machine_note(),
        "catalogue": {"kind": args.catalogue, **counts, "prepare_s": prep_s},
        "gunicorn": list(gunicorn_args),
        "memory": memory,
        "worker_env": worker_env,
        "rate": args.rate,
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "baseline": summarise_baseline(baseline_runs),
        "endpoints": {
            name: {
                "path": ENDPOINTS[name].replace("{id}", "<id>"),
                "in_process": ip[name],
                "p50_ms": r["open"].p50_ms, "p99_ms": r["open"].p99_ms, "max_rps": r["closed"].achieved_rps,
                "open": r["open"].to_dict(), "closed": r["closed"].to_dict(),
            }
            for name, r in service.items()
        },
        "upserts": upserts,
    }
    print_table(figures)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
