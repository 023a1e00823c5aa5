"""Reliability suite: the service under gunicorn (4 workers, 127.0.0.1) attacked as an operator and an outsider would.

    python benchmarks/reliability.py [--postgres URL] [--quick] [--json PATH]

It builds a fresh data directory (the generated demo shop, embedded with tiny random encoders, a trained
feed model) in a dedicated database (a scratch PostgreSQL database when one is reachable, else a SQLite
file), starts ``gunicorn -w 4 services.wsgi:app`` on a free loopback port and prints ONE markdown table:

1. **writers + kill -9**: concurrent writers post event batches (half with ``event_id``, half with neither
   ``event_id`` nor ``timestamp``, every batch with an ``Idempotency-Key``, retried with the same key on a
   connection error or a 5xx) while one worker is ``kill -9``'d mid-run: events acknowledged must equal the
   rows in SQL, 0 duplicated, 0 lost.
2. **database outage** (PostgreSQL only): under the same kind of load plus readers, the dedicated database
   refuses connections (``ALTER DATABASE ... ALLOW_CONNECTIONS false`` + ``pg_terminate_backend`` of its
   sessions; the shared server is never stopped) for ``--outage-s`` seconds: the status codes seen, no
   5xx but 503, nothing acknowledged lost, seconds from access restored to the first stored batch.
3. **schemathesis** over ``/openapi.json`` without and with the API key: 5xx and schema violations.
4. **worker memory** (RSS from ``/proc``) before and after 3,000 distinct similar-items questions, against
   ``service.similar_cache_bytes``.
5. Rows of ``benchmarks/reliability_images.py`` when it exists (hostile image references; its
   ``rows(ctx)`` gets :class:`Context` and returns rows of the same four columns).

Request counts and times are bounded; everything listens on and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.util
import json
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (str(REPO), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

from http_load import gunicorn_server, machine_note  # noqa: E402

KEY = "reliability-key"
CACHE_BYTES = 4 * 1024 * 1024
DEFAULT_PG = os.environ.get("RECSYS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
Row = tuple[str, str, str, str]
"""(check, what was done, result, holds: yes/NO)"""


@dataclass
class Context:
    """What the row groups get: the live server, the data and how to reach the database."""

    base_url: str
    key: str
    data_dir: Path
    config_path: Path
    db_url: str
    master_pid: int
    quick: bool
    admin_url: str | None = None
    notes: list[str] = field(default_factory=list)

    def worker_pids(self) -> list[int]:
        kids = Path(f"/proc/{self.master_pid}/task/{self.master_pid}/children")
        return [int(x) for x in kids.read_text().split()] if kids.exists() else []


# ---------------------------------------------------------------------------------------------- set-up
@contextlib.contextmanager
def scratch_database(pg_url: str | None, tmp: Path) -> Iterator[tuple[str, str | None]]:
    """``(url, admin_url)``: a dedicated PostgreSQL database (dropped afterwards) or a SQLite file."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    if pg_url:
        admin_url = make_url(pg_url).set(drivername="postgresql+psycopg")
        try:
            admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # noqa: BLE001 - fall back to SQLite and say why
            print(f"# PostgreSQL not reachable at {pg_url} ({type(exc).__name__}); using SQLite", file=sys.stderr)
            pg_url = None
    if not pg_url:
        yield f"sqlite:///{tmp / 'recsys.sqlite'}", None
        return
    name = f"recsys_reliability_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False), \
            admin_url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def prepare(db_url: str, data_dir: Path, n_items: int) -> Path:
    """The demo shop in ``db_url``, embedded with tiny random encoders, a trained feed model; returns the
    config file the workers read."""
    from recsys.config import load_config
    from recsys.demo.catalogue import generate_demo
    from recsys.embed import run_embed
    from recsys.encoders.testing import save_tiny_text_model, tiny_image_encoder, tiny_text_encoder
    from recsys.ingest import ingest_events, ingest_items
    from recsys.recommend.model import train_feed
    from recsys.store.db import make_engine, upgrade

    data_dir.mkdir(parents=True, exist_ok=True)
    text_path = save_tiny_text_model(data_dir / "tiny-text")
    cfg_file = data_dir / "config.yaml"
    cfg_file.write_text(
        f"data_dir: {data_dir}\ndatabase:\n  url: {db_url}\nencoders:\n  text:\n    name: {text_path}\n"
        f"    batch_size: 16\n    max_length: 32\nservice:\n  api_keys: [{KEY}]\n  similar_cache_bytes: {CACHE_BYTES}\n"
        f"  retry_after_s: 1\n  upsert_wait_s: 5\n"
    )
    config = load_config(cfg_file, env={})
    engine = make_engine(db_url)
    upgrade(engine)
    files = generate_demo(data_dir / "demo", n_items=n_items, n_users=80, seed=1)
    preset = config.ingest.presets["demo"]
    ingest_items(engine, files.items_csv, preset.items, reject_path=data_dir / "r1.jsonl")
    ingest_events(engine, files.events_csv, preset.events, config.event_types, reject_path=data_dir / "r2.jsonl")
    run_embed(engine, config.encoders, text_encoder=tiny_text_encoder(text_path), image_encoder=tiny_image_encoder())
    train_feed(engine, config)
    engine.dispose()
    return cfg_file


def _count_rows(db_url: str, prefix: str) -> int:
    from sqlalchemy import text

    from recsys.store.db import make_engine

    eng = make_engine(db_url)
    with eng.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM events e JOIN users u ON u.id = e.user_id WHERE u.external_id LIKE :p"),
                         {"p": prefix + "%"}).scalar_one()
    eng.dispose()
    return int(n)


# ---------------------------------------------------------------------------------------------- writers
class Writers:
    """Threads posting event batches with an Idempotency-Key each, retrying a batch until it is acknowledged."""

    def __init__(self, ctx: Context, prefix: str, n_writers: int, batches: int, batch_size: int = 10,
                 deadline_s: float = 120.0) -> None:
        self.ctx, self.prefix = ctx, prefix
        self.n_writers, self.batches, self.batch_size = n_writers, batches, batch_size
        self.deadline = time.monotonic() + deadline_s
        self.acked = 0
        self.known = 0
        """Events the server acknowledged as already stored (``duplicates``): 0 expected, every event is new."""
        self.done_batches = 0
        self.statuses: collections.Counter[str] = collections.Counter()
        self.first_ok_after: dict[str, float] = {}
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(n_writers)]

    def start(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def join(self) -> None:
        for t in self.threads:
            t.join()

    def _batch(self, w: int, b: int) -> list[dict[str, Any]]:
        items = [f"D{(w * 31 + b * 7 + j) % 50 + 1:04d}" for j in range(self.batch_size)]
        user = f"{self.prefix}{w}"
        if w % 2:  # neither event_id nor timestamp: only the Idempotency-Key makes a retry safe (``value`` keeps
            # the events distinct: identical events in the same second would be one event by the content key)
            return [{"user_id": user, "item_id": it, "event_type": "view", "value": b * 100 + j} for j, it in enumerate(items)]
        return [{"user_id": user, "item_id": it, "event_type": "click", "event_id": f"{self.prefix}{w}-{b}-{j}",
                 "timestamp": 1_700_000_000 + b} for j, it in enumerate(items)]

    def _run(self, w: int) -> None:
        session = requests.Session()
        for b in range(self.batches):
            body = {"events": self._batch(w, b)}
            headers = {"X-API-Key": self.ctx.key, "Idempotency-Key": f"{self.prefix}{w}-{b}"}
            while time.monotonic() < self.deadline:
                try:
                    r = session.post(f"{self.ctx.base_url}/v1/events", json=body, headers=headers, timeout=15)
                    status = str(r.status_code)
                except requests.RequestException as exc:
                    status = type(exc).__name__
                    r = None
                with self._lock:
                    self.statuses[status] += 1
                if r is not None and r.status_code == 200:
                    data = r.json()
                    with self._lock:
                        self.acked += data["inserted"]
                        self.known += data["duplicates"]
                        self.done_batches += 1
                        self.first_ok_after.setdefault("t", time.monotonic())
                    break
                retry = float(r.headers.get("Retry-After", 0.2)) if r is not None else 0.2
                time.sleep(min(retry, 1.0))


def row_writers_kill(ctx: Context) -> Row:
    n_writers, batches = (4, 10) if ctx.quick else (8, 25)
    writers = Writers(ctx, f"kill-{uuid.uuid4().hex[:6]}-w", n_writers, batches).start()
    total = n_writers * batches
    while writers.done_batches < total // 3 and any(t.is_alive() for t in writers.threads):
        time.sleep(0.05)
    victim = ctx.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    writers.join()
    rows = _count_rows(ctx.db_url, writers.prefix)
    sent = total * writers.batch_size
    dup, lost = max(rows - writers.acked, 0), max(writers.acked - rows, 0)
    holds = writers.acked == rows == sent and dup == 0 and writers.known == 0
    statuses = ", ".join(f"{k}: {v}" for k, v in sorted(writers.statuses.items()))
    return ("writers + worker kill -9",
            f"{n_writers} writers x {batches} batches x 10 events (half without event_id/timestamp), worker {victim} killed "
            f"after {total // 3} batches",
            f"acknowledged {writers.acked} of {sent} sent, rows in SQL {rows}, duplicated {dup}, lost {lost}, "
            f"answered as already stored {writers.known}; responses {statuses}",
            "yes" if holds else "NO")


# ---------------------------------------------------------------------------------------------- outage
@contextlib.contextmanager
def refused(ctx: Context) -> Iterator[None]:
    """The dedicated database refuses connections and its sessions are terminated; access comes back after."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    assert ctx.admin_url is not None
    name = make_url(ctx.db_url).database
    admin = create_engine(ctx.admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
    try:
        yield
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()


def _readers(ctx: Context, stop: threading.Event, statuses: collections.Counter[str]) -> threading.Thread:
    def run() -> None:
        s = requests.Session()
        i = 0
        while not stop.is_set():
            i += 1
            url = (f"{ctx.base_url}/v1/items/D{i % 50 + 1:04d}/similar?k=5" if i % 2 else
                   f"{ctx.base_url}/v1/users/U{i % 40 + 1:04d}/recommendations?k=5")
            try:
                r = s.get(url, timeout=15)
                kind = "similar" if i % 2 else "feed"
                statuses[f"{kind} {r.status_code}{' degraded' if r.ok and r.json().get('degraded') else ''}"] += 1
            except requests.RequestException as exc:
                statuses[type(exc).__name__] += 1
            time.sleep(0.02)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _probe_recovery(ctx: Context, writers: Writers, limit_s: float = 60.0) -> float:
    """Seconds from access restored to the first stored batch: one-event batches every 50 ms until a 200."""
    restored = time.monotonic()
    s = requests.Session()
    i = 0
    while time.monotonic() - restored < limit_s:
        i += 1
        body = {"events": [{"user_id": f"{writers.prefix}probe", "item_id": "D0001", "event_type": "view",
                            "event_id": f"probe-{i}"}]}
        try:
            r = s.post(f"{ctx.base_url}/v1/events", json=body, headers={"X-API-Key": ctx.key}, timeout=15)
        except requests.RequestException:
            r = None
        if r is not None and r.status_code == 200:
            with writers._lock:
                writers.acked += r.json()["inserted"]
            return time.monotonic() - restored
        time.sleep(0.05)
    return float("nan")


def row_outage(ctx: Context, outage_s: float) -> Row:
    if ctx.admin_url is None:
        return ("database outage", "needs PostgreSQL (--postgres URL)", "not run: the suite ran on SQLite", "n/a")
    writers = Writers(ctx, f"outage-{uuid.uuid4().hex[:6]}-w", 4, 10**6, deadline_s=outage_s + 60)
    stop = threading.Event()
    read_statuses: collections.Counter[str] = collections.Counter()
    reader = _readers(ctx, stop, read_statuses)
    writers.batches = 10**6  # run until stopped below
    writers.start()
    time.sleep(2.0)
    with refused(ctx):
        during_start = dict(writers.statuses)
        time.sleep(outage_s)
        during = {k: v - during_start.get(k, 0) for k, v in writers.statuses.items()}
        reads_during = dict(read_statuses)
    recover = _probe_recovery(ctx, writers)
    time.sleep(1.0)
    writers.deadline = 0  # stop after the batch in flight
    writers.join()
    stop.set()
    reader.join()
    rows = _count_rows(ctx.db_url, writers.prefix)
    bad5xx = sum(v for k, v in {**during, **writers.statuses}.items() if k.startswith("5") and k != "503")
    bad5xx += sum(v for k, v in read_statuses.items() if " 5" in k)
    writes = ", ".join(f"{k}: {v}" for k, v in sorted(during.items()))
    reads = ", ".join(f"{k}: {v}" for k, v in sorted(reads_during.items()))
    holds = rows == writers.acked and writers.known == 0 and bad5xx == 0 and recover == recover and "503" in during
    return ("database outage (PostgreSQL)",
            f"4 writers + 1 reader; connections to the dedicated database refused and terminated for {outage_s:.0f} s",
            f"during: events {writes}; reads {reads}; other 5xx {bad5xx}; acknowledged {writers.acked}, rows in SQL {rows}, "
            f"answered as already stored {writers.known}; "
            f"recovered {recover:.2f} s after access came back (no restart)",
            "yes" if holds else "NO")


# ---------------------------------------------------------------------------------------------- schemathesis
def rows_schemathesis(ctx: Context, tmp: Path) -> list[Row]:
    from tests.test_schemathesis import CHECKS, run_schemathesis

    out = []
    for name, key in (("without key", None), ("with key", ctx.key)):
        res = run_schemathesis(ctx.base_url, tmp / f"st-{name.replace(' ', '-')}", key=key,
                               max_examples=10 if ctx.quick else 25, max_time=20 if ctx.quick else 45)
        summary = summarise_schemathesis(res)
        if res["rc"] != 0:
            print(f"# schemathesis {name}:\n{res['output']}", file=sys.stderr)
        out.append((f"schemathesis {name}", f"checks {CHECKS}; phases examples, coverage, fuzzing",
                    summary, "yes" if res["rc"] == 0 else "NO"))
    return out


def summarise_schemathesis(res: dict[str, Any]) -> str:
    """Test cases, 5xx, schema violations and any other failure (title, count, operations) from the JSON report."""
    rep = res.get("report") or {}
    cases = rep.get("test_cases", {})
    failures = rep.get("failures", [])
    server = sum(f.get("count", 1) for f in failures if "server" in str(f.get("title", "")).lower())
    schema = sum(f.get("count", 1) for f in failures if "schema" in str(f.get("title", "")).lower())
    other = [f"{f.get('title')} x{f.get('count')} ({', '.join(f.get('operations', [])[:3])})" for f in failures
             if "server" not in str(f.get("title", "")).lower() and "schema" not in str(f.get("title", "")).lower()]
    ops = rep.get("operations") or {}
    return (f"exit code {res['rc']}; {cases.get('generated', '?')} test cases over {ops.get('tested', '?')} operations "
            f"in {rep.get('running_time', 0):.0f} s; 5xx: {server}; schema violations: {schema}"
            + (f"; other failures: {'; '.join(other)}" if other else "")
            + (f"; errors: {rep['errors']}" if rep.get("errors") else ""))


# ---------------------------------------------------------------------------------------------- memory
def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def row_memory(ctx: Context, n_keys: int = 3000) -> Row:
    pids = ctx.worker_pids()
    s = requests.Session()
    for i in range(40):  # touch every worker's code paths first
        s.get(f"{ctx.base_url}/v1/items/D{i % 50 + 1:04d}/similar", params={"k": 3}, timeout=15)
    before = {p: _rss(p) for p in pids}
    statuses: collections.Counter[int] = collections.Counter()
    for i in range(n_keys):  # distinct (item, k, available_only) questions, none repeated
        item, k = f"D{i % 150 + 1:04d}", 100 + (i // 150) % 400
        r = s.get(f"{ctx.base_url}/v1/items/{item}/similar", params={"k": k, "available_only": "false"}, timeout=15)
        statuses[r.status_code] += 1
    after = {p: _rss(p) for p in pids if Path(f"/proc/{p}").exists()}
    growth = {p: after[p] - before[p] for p in after}
    worst = max(growth.values()) if growth else 0
    mib = 1024 * 1024
    return ("worker memory vs 3,000 cache keys",
            f"{n_keys} distinct GET /v1/items/<id>/similar?k=100..499 (no key) over {len(pids)} workers; "
            f"service.similar_cache_bytes = {CACHE_BYTES / mib:.0f} MiB per worker",
            f"RSS per worker before {', '.join(f'{before[p] / mib:.0f}' for p in pids)} MiB; growth "
            f"{', '.join(f'{growth[p] / mib:+.1f}' for p in growth)} MiB (max {worst / mib:+.1f}); statuses {dict(statuses)}",
            "yes" if worst <= CACHE_BYTES * 1.5 and set(statuses) == {200} else "NO")


# ---------------------------------------------------------------------------------------------- more rows
def extra_rows(ctx: Context) -> list[Row]:
    """Rows of ``benchmarks/reliability_images.py`` when that module exists: its ``rows(ctx) -> list[Row]``,
    or its ``run_cases() -> list[dict]`` (it starts its own server; each case becomes one row here)."""
    path = HERE / "reliability_images.py"
    if not path.is_file():
        return []
    spec = importlib.util.spec_from_file_location("reliability_images", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if hasattr(module, "rows"):
        return [tuple(r) for r in module.rows(ctx)]  # type: ignore[misc]
    out: list[Row] = []
    for r in module.run_cases():
        out.append((f"image reference: {r.get('case')}", f"PUT /v1/items/<id> with `{r.get('reference')}`",
                    f"status {r.get('status')} in {r.get('seconds')} s (deadline {r.get('deadline_s')} s); "
                    f"{r.get('outcome')}; requests to the test servers: {r.get('server_requests')}",
                    "yes" if r.get("within_deadline") else "NO"))
    return out


def table(rows: list[Row]) -> str:
    lines = ["| check | what was done | result | holds |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(c.replace('|', '/') for c in r)} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--postgres", default=DEFAULT_PG, metavar="URL",
                    help="PostgreSQL server for the dedicated database ('' = SQLite; default %(default)s)")
    ap.add_argument("--outage-s", type=float, default=8.0)
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--quick", action="store_true", help="fewer writers, examples and keys")
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    ap.add_argument("--only", default="memory,kill,outage,schemathesis,extra",
                    help="comma-separated row groups to run (default: all: %(default)s)")
    args = ap.parse_args()
    t0 = time.monotonic()
    load_before = os.getloadavg()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="recsys-reliability-") as tmp_s:
        tmp = Path(tmp_s)
        with scratch_database(args.postgres or None, tmp) as (db_url, admin_url):
            cfg_file = prepare(db_url, tmp / "data", args.items)
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}, "RECSYS_CONFIG": str(cfg_file)}
            with gunicorn_server("services.wsgi:app", log_path=tmp / "gunicorn.log", cwd=REPO, env=env,
                                 gunicorn_args=("-w", "4"), ready_path="/readyz") as server:
                ctx = Context(server.base_url, KEY, tmp / "data", cfg_file, db_url, server.process.pid, args.quick, admin_url)
                steps: dict[str, Callable[[], list[Row]]] = {
                    "memory": lambda: [row_memory(ctx)],
                    "kill": lambda: [row_writers_kill(ctx)],
                    "outage": lambda: [row_outage(ctx, args.outage_s)],
                    "schemathesis": lambda: rows_schemathesis(ctx, tmp),
                    "extra": lambda: extra_rows(ctx),
                }
                chosen = [name.strip() for name in args.only.split(",")]
                for name in chosen:
                    step = steps[name]
                    try:
                        rows += step()
                    except Exception as exc:  # noqa: BLE001 - a broken step is a row that says so
                        rows.append((f"{name} (step failed)", "", f"{type(exc).__name__}: {exc}", "NO"))
                    time.sleep(0.5)
                log_text = (tmp / "gunicorn.log").read_text(errors="replace")
                tracebacks = log_text.count("Traceback (most recent call last)")
                rows.append(("server log", f"{len(log_text):,} bytes of gunicorn log for the whole run",
                             f"{tracebacks} tracebacks", "yes" if tracebacks == 0 else "NO"))
    print(table(rows))
    load_after = os.getloadavg()
    print(f"\n{machine_note()}; load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
          f"database {'PostgreSQL (dedicated scratch database)' if args.postgres else 'SQLite'}; "
          f"{time.monotonic() - t0:.0f} s in all.")
    if args.json:
        Path(args.json).write_text(json.dumps([dict(zip(("check", "done", "result", "holds"), r)) for r in rows], indent=1))


if __name__ == "__main__":
    main()
