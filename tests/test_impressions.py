"""Impression logging: request ids in every served list, the background writer, drops, spools, retention.

Service tests go through the Flask test client (and gunicorn for killed workers) over a real database:
a SQLite file and PostgreSQL where reachable.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import func, select

from recsys.config import Config
from recsys.experiments.settings import ImpressionsConfig
from recsys.serving import impressions as imp
from recsys.serving.impressions import ImpressionLog, ImpressionRecord, prune_impressions, recover_spools
from recsys.store.db import make_engine, upgrade
from recsys.store.models import Event, Impression, ImpressionItem
from tests.test_service import KEY, REPO, _free_port, _prepare, module_db_url, tiny_models  # noqa: F401

REC = dict(surface="feed", user_id="u1", model_version="m1", index_version="i1")


def _record(n: int, items: int = 3, ts_ms: int | None = None) -> ImpressionRecord:
    return ImpressionRecord(request_id=f"r{n:06d}", items=tuple(f"I{n}-{p}" for p in range(items)),
                            ts_ms=ts_ms if ts_ms is not None else int(time.time() * 1000), **REC)


def _count(engine: Any, model: Any = Impression) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


@pytest.fixture(scope="module")
def served(module_db_url: str, tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Any]
           ) -> Iterator[tuple[Any, Any, Config, Any]]:
    from recsys.serving import Runtime
    from services.app import create_app

    config = _prepare(module_db_url, tmp_path_factory.mktemp("imp-data") / "data", tiny_models)
    engine = make_engine(module_db_url)
    rt = Runtime(config, engine, text_encoder=tiny_models["text"], image_encoder=tiny_models["image"])
    rt.reload()
    app = create_app(config, rt)
    app.extensions["recsys.experiments"].refresh_s = 0.0
    yield app.test_client(), app.extensions["recsys.impressions"], config, engine
    app.extensions["recsys.impressions"].close()
    engine.dispose()


def test_every_served_list_has_a_request_id_and_is_logged(served: tuple[Any, Any, Config, Any]) -> None:
    client, logger, _cfg, engine = served
    feed = client.get("/v1/users/U0001/recommendations?k=5").json
    sim = client.get("/v1/items/D0002/similar?k=4").json
    found = client.post("/v1/search", json={"text": "mug", "user_id": "U0002", "k": 3}).json
    ids = [feed["request_id"], sim["request_id"], found["request_id"]]
    assert len(set(ids)) == 3 and all(len(r) == 32 for r in ids)
    assert logger.flush(10)
    with engine.connect() as conn:
        heads = {r.request_id: r for r in conn.execute(select(Impression.__table__).where(Impression.request_id.in_(ids)))}
        rows = conn.execute(select(ImpressionItem.request_id, ImpressionItem.position, ImpressionItem.item_id)
                            .where(ImpressionItem.request_id == feed["request_id"]).order_by(ImpressionItem.position)).all()
    assert [heads[i].surface for i in ids] == ["feed", "similar", "search"]
    assert heads[ids[0]].user_id == "U0001" and heads[ids[1]].user_id is None and heads[ids[2]].user_id == "U0002"
    assert heads[ids[0]].model_version == feed["model_version"] and heads[ids[0]].model_version is not None
    assert [(p, it) for _, p, it in rows] == list(enumerate(i["id"] for i in feed["items"]))
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "recsys_impressions_dropped_total 0.0" in metrics and "recsys_impressions_written_total" in metrics


def test_events_carry_request_id_and_position(served: tuple[Any, Any, Config, Any]) -> None:
    client, _logger, _cfg, engine = served
    feed = client.get("/v1/users/U0003/recommendations?k=5").json
    item = feed["items"][2]["id"]
    ev = {"user_id": "U0003", "item_id": item, "event_type": "click", "request_id": feed["request_id"], "position": 2}
    got = client.post("/v1/events", json={"events": [ev]}, headers={"X-API-Key": KEY})
    assert got.status_code == 200 and got.json["inserted"] == 1
    bad = client.post("/v1/events", json={"events": [{**ev, "position": -1}]}, headers={"X-API-Key": KEY})
    assert bad.status_code == 400 and "position" in bad.json["error"]["field"]
    with engine.connect() as conn:
        attrs = conn.execute(select(Event.attributes).where(Event.attributes.is_not(None))).scalars().all()
    assert {"request_id": feed["request_id"], "position": 2} in attrs


def _cli(config: Config, *args: str) -> str:
    from click.testing import CliRunner

    from recsys.cli import cli

    cfg = Path(config.data_dir) / "config.yaml"
    res = CliRunner().invoke(cli, ["--config", str(cfg), *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def test_experiments_split_interleave_and_report(served: tuple[Any, Any, Config, Any]) -> None:
    from recsys.experiments.assign import assign
    from recsys.experiments.store import find_experiment

    client, logger, config, engine = served
    _cli(config, "experiments", "create", "ab1", "--variant", "name=hyb,ranker=hybrid",
         "--variant", "name=pop,ranker=popularity")
    exp = find_experiment(engine, config.experiments, "ab1")
    users = [f"U{i:04d}" for i in range(4, 24)]
    got = {u: client.get(f"/v1/users/{u}/recommendations?k=5").json for u in users}
    assert all(g["experiment"] == "ab1" and g["variant"] == assign(exp, u).name for u, g in got.items())
    assert {g["variant"] for g in got.values()} == {"hyb", "pop"}
    again = client.get(f"/v1/users/{users[0]}/recommendations?k=5").json
    assert again["variant"] == got[users[0]]["variant"]  # sticky
    pop_user = next(u for u, g in got.items() if g["variant"] == "pop")
    assert all(r["type"] == "popular" for it in got[pop_user]["items"] for r in it["reasons"])
    clicks = [{"user_id": u, "item_id": g["items"][0]["id"], "event_type": "click", "request_id": g["request_id"],
               "position": 0} for u, g in got.items() if g["variant"] == "hyb"]
    assert client.post("/v1/events", json={"events": clicks}, headers={"X-API-Key": KEY}).status_code == 200
    assert logger.flush(10)
    out = _cli(config, "experiments", "report", "ab1", "--json")
    import json

    rep = json.loads(out)
    by = {v["name"]: v for v in rep["variants"]}
    assert by["hyb"]["clicked_lists"] == by["hyb"]["clicks"] == len(clicks) > 0
    assert by["pop"]["clicked_lists"] == 0 and by["hyb"]["lists"] + by["pop"]["lists"] == len(users) + 1
    _cli(config, "experiments", "stop", "ab1")
    _cli(config, "experiments", "create", "il1", "--mode", "interleave", "--variant", "name=hyb,ranker=hybrid",
         "--variant", "name=pop,ranker=popularity")
    feed = client.get("/v1/users/U0030/recommendations?k=6").json
    assert feed["experiment"] == "il1" and feed["variant"] == "interleaved" and len(feed["items"]) == 6
    assert logger.flush(10)
    with engine.connect() as conn:
        teams = conn.execute(select(ImpressionItem.team).where(ImpressionItem.request_id == feed["request_id"])
                             .order_by(ImpressionItem.position)).scalars().all()
    assert sorted(set(teams)) == ["hyb", "pop"] and abs(teams.count("hyb") - 3) <= 1
    assert "share of wins" in _cli(config, "experiments", "report", "il1", "--plot", str(Path(config.data_dir) / "r.png"))
    assert (Path(config.data_dir) / "r.png").stat().st_size > 1000
    _cli(config, "experiments", "stop", "il1")
    plain = client.get("/v1/users/U0030/recommendations?k=6").json
    assert plain.get("experiment") is None


def test_a_full_queue_drops_and_counts(engine: Any, tmp_path: Path) -> None:
    upgrade(engine)
    logger = ImpressionLog(engine, ImpressionsConfig(queue_size=5, flush_interval_s=0.05), tmp_path / "spool",
                           register_atexit=False)
    gate = threading.Lock()
    gate.acquire()
    real = imp.write_impressions
    imp.write_impressions = lambda e, recs: (gate.acquire(), real(e, recs), gate.release())  # type: ignore[assignment]
    try:
        accepted = [logger.log(_record(n)) for n in range(20)]
        # the writer holds at most one batch while blocked; the queue holds 5 more
        assert 5 <= sum(accepted) <= 20 and logger.stats()["dropped"] == 20 - sum(accepted)
    finally:
        gate.release()
        imp.write_impressions = real  # type: ignore[assignment]
    assert logger.flush(10)
    logger.close()
    assert _count(engine) == sum(accepted) and logger.stats()["dropped"] + _count(engine) == 20
    assert not list((tmp_path / "spool").glob("*.spool"))  # a clean close leaves no spool


def test_a_database_outage_drops_the_batch_and_counts_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imp, "RETRIES", (0.01,))
    logger = ImpressionLog(make_engine("postgresql://nobody@127.0.0.1:1/none"),
                           ImpressionsConfig(flush_interval_s=0.05), tmp_path / "spool", register_atexit=False)
    assert logger.log(_record(1))
    assert logger.flush(20)
    assert logger.stats()["dropped"] == 1 and logger.stats()["written"] == 0
    logger.close()


def test_close_writes_what_is_queued(engine: Any, tmp_path: Path) -> None:
    upgrade(engine)
    logger = ImpressionLog(engine, ImpressionsConfig(flush_interval_s=5.0, batch_size=7), tmp_path / "spool",
                           register_atexit=False)
    for n in range(50):
        logger.log(_record(n))
    logger.close()
    assert _count(engine) == 50 and _count(engine, ImpressionItem) == 150
    assert not logger.log(_record(99)) and logger.stats()["dropped"] == 1  # closed: counted, not lost silently


KILLED = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    from recsys.experiments.settings import ImpressionsConfig
    from recsys.serving.impressions import ImpressionLog, ImpressionRecord
    from recsys.store.db import make_engine
    logger = ImpressionLog(make_engine(sys.argv[1]), ImpressionsConfig(flush_interval_s=0.01, batch_size=16),
                           Path(sys.argv[2]))
    for n in range(300):
        logger.log(ImpressionRecord(request_id=f"k{n:05d}", surface="feed", user_id="u", items=("a", "b"),
                                    ts_ms=int(time.time() * 1000)))
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_killed_process_spool_is_recovered(db_url: str, tmp_path: Path) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    spool = tmp_path / "spool"
    proc = subprocess.run([sys.executable, "-c", KILLED, db_url, str(spool)], cwd=REPO, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    before = _count(engine)
    assert before < 300 or not list(spool.glob("*.spool"))
    assert recover_spools(engine, spool) >= 300 - before  # lines since the last truncation (written ones skipped)
    assert _count(engine) == 300 and _count(engine, ImpressionItem) == 600
    assert not list(spool.glob("*.spool"))
    engine.dispose()


def test_retention_prunes_old_lists(engine: Any) -> None:
    upgrade(engine)
    now = int(time.time() * 1000)
    imp.write_impressions(engine, [_record(1, ts_ms=now - 10 * 86_400_000), _record(2, ts_ms=now)])
    assert prune_impressions(engine, retention_days=5, now_ms=now) == 1
    assert _count(engine) == 1 and _count(engine, ImpressionItem) == 3


def _wait_ready(base: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"gunicorn did not become ready\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def _workers(master: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.slow
def test_killed_workers_lose_no_answered_impression(db_url: str, tmp_path: Path, tiny_models: dict[str, Any]) -> None:
    """gunicorn, 2 workers under load; one is SIGKILLed, another SIGTERMed, then the server stops: every
    list answered with 200 is in SQL (the killed worker's spool is recovered by its replacement)."""
    _prepare(db_url, tmp_path / "data", tiny_models)
    port = _free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")},
           "RECSYS_CONFIG": str(tmp_path / "data" / "config.yaml")}
    gunicorn = Path(sys.executable).with_name("gunicorn")
    log = tmp_path / "gunicorn.log"
    proc = subprocess.Popen(
        [str(gunicorn), "-c", "python:services.gunicorn_conf", "-w", "2", "-b", f"127.0.0.1:{port}",
         "--timeout", "120", "services.wsgi:app"],
        cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    answered: list[str] = []
    stop = threading.Event()

    def load(worker: int) -> None:
        s = requests.Session()
        n = 0
        while not stop.is_set():
            n += 1
            try:
                r = s.get(f"{base}/v1/users/U{(worker * 7 + n) % 40 + 1:04d}/recommendations", params={"k": 5}, timeout=30)
            except requests.RequestException:  # the killed worker's connection
                continue
            if r.status_code == 200:
                answered.append(r.json()["request_id"])

    try:
        _wait_ready(base, proc, log)
        threads = [threading.Thread(target=load, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        time.sleep(3)
        killed = _workers(proc.pid)[0]
        os.kill(killed, signal.SIGKILL)
        spool = tmp_path / "data" / "impressions-spool"
        deadline = time.monotonic() + 180
        while list(spool.glob(f"{killed}-*")):  # the replacement worker recovers the killed one's spool
            if time.monotonic() > deadline:
                pytest.fail(f"the killed worker's spool was not recovered\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        time.sleep(2)
        stop.set()
        for t in threads:
            t.join()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    engine = make_engine(db_url)
    left = list(spool.glob("*.spool"))
    assert not left, f"spools left: {[(p.name, p.stat().st_size) for p in left]}, {log.read_text()[-3000:]}"
    with engine.connect() as conn:
        stored = set(conn.execute(select(Impression.request_id)).scalars())
    engine.dispose()
    assert len(answered) > 50, f"killed {killed}"
    missing = set(answered) - stored
    assert not missing, f"{len(missing)} of {len(answered)} answered lists are not in SQL\n{log.read_text()[-2000:]}"


def test_reranker_variant_trains_serves_and_hot_reloads(served: tuple[Any, Any, Config, Any]) -> None:
    from recsys.recommend.reranker_training import train_reranker
    from recsys.store.artifacts import active_artifact

    client, _logger, config, engine = served
    first = train_reranker(engine, config, source="events")
    assert first.info["source"] == "events" and first.info["queries"] > 5
    _cli(config, "experiments", "create", "rr1", "--replace", "--variant", "name=base,ranker=hybrid,share=0",
         "--variant", "name=rr,ranker=hybrid,reranker=true,share=1")
    got = client.get("/v1/users/U0005/recommendations?k=5").json
    assert got["variant"] == "rr" and len(got["items"]) == 5
    assert all(it["reasons"] == [{"type": "reranked"}] for it in got["items"])
    seen = {str(i) for i in client.application.extensions["recsys"].user_history("U0005").items}
    assert not seen & {str(client.application.extensions["recsys"]._st().row[i["id"]]) for i in got["items"]}
    slot = client.application.extensions["recsys.reranker"]
    assert slot.get().version == first.version
    second = train_reranker(engine, config, source="events", seed=1, version=first.version + "-b")
    slot._checked = -1e9  # the next look at the registry is due (every 2 s in service)
    assert slot.get().version == second.version == active_artifact(engine, "reranker").version
    _cli(config, "experiments", "stop", "rr1")
