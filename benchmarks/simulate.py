#!/usr/bin/env python
"""Simulated users with real preferences against the LIVE service (issue 13).

MovieLens is split in time per user (temporal-20: each user's last 20% of items are their future); the
service (gunicorn on 127.0.0.1, a fresh SQLite database under ``--work``) is trained on the past. Simulated
users request feeds over HTTP; each shown item is clicked with probability ``(position + 1) ** -eta *
(p_future if the item is among the user's real future items else p_other)``; clicks are posted as events
with the list's ``request_id`` and ``position``. Clicks are posted with event type ``click`` of weight 0,
so they are recorded and attributed but do not change the users' feeds: each phase sees the same users.

Phases (one experiment each, created through the same code as ``recsys experiments create``):

- ``ab``: A/B hybrid vs popularity (users split by the hash);
- ``il``: team-draft interleaving of hybrid and popularity;
- ``aa``: A/B of two identical hybrids, live once, plus ``--aa-repeats`` offline repeats that re-split the
  users (new salt) and re-draw the clicks on the lists served live, through the same assignment, click
  model and report code.

- ``src``: every user's hybrid and popularity list (one request each, no clicks; these lists are removed
  from the log before round 2), then ``--redraws`` offline redraws of the assignment (A/B: new salt;
  interleaving: new team-draft coins, plain and "shared items credited to nobody") and of the clicks over
  those lists, for A/B, interleaving and an interleaved A/A of two identical hybrids;
- ``r2``: a reranker trained on the log so far (round 1) against the base hybrid, same users and coins.

For (a) the p-value is computed at every ``--step`` lists, in serving order; "lists needed" is the first
checkpoint from which ``p < 0.01`` holds at every later checkpoint (one value per live phase, a median and
quartiles over the redraws). Seeded; bounded by ``--requests`` per phase and ``--max-seconds`` overall;
loopback only.

    python benchmarks/simulate.py --work /tmp/sim --requests 1500 --json sim.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (str(REPO), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import pandas as pd
import requests
from http_load import gunicorn_server, machine_note

from recsys.experiments.report import format_report, read_outcomes, summarise
from recsys.experiments.settings import ExperimentConfig
from recsys.experiments.simulation import (
    ClickModel,
    aa_repeats,
    ab_lists_estimate,
    interleaving_lists_estimate,
    lists_needed,
    paired_difference,
    redraw_lists_needed,
    request_seed,
    sequential_p,
    temporal_split,
)
from recsys.experiments.store import save_experiment, stored_experiments

log = logging.getLogger("simulate")
KEY = "sim-key"


def prepare(data: Path, work: Path, reuse: bool = False) -> tuple[Any, dict[str, set[str]], Path]:
    """Split, load the past into a fresh database, embed texts, train the feed. Returns (config, future, cfg file).

    ``reuse``: the database in ``work`` was prepared from the same split by an earlier run; only the split
    is recomputed."""
    from recsys.config import load_config
    from recsys.embed import run_embed
    from recsys.encoders.factory import build_text_encoder
    from recsys.ingest import ingest_events, ingest_items
    from recsys.recommend.model import train_feed
    from recsys.store.db import engine_from_config, upgrade

    work.mkdir(parents=True, exist_ok=True)
    events = pd.read_csv(data / "events.csv")
    past, future = temporal_split(events)
    cfg = work / "config.yaml"
    if reuse and cfg.exists():
        config = load_config(cfg, env={})
        engine = engine_from_config(config)
        upgrade(engine)  # a database prepared by an older checkout
        engine.dispose()
        return config, future, cfg
    past.to_csv(work / "past.csv", index=False)
    cfg.write_text(
        f"data_dir: {work / 'data'}\n"
        "event_types: {rating: 1.0, click: 0.0, purchase: 0.0}\n"
        f"service:\n  api_keys: [{KEY}]\n"
        "impressions:\n  flush_interval_s: 0.2\n"
    )
    config = load_config(cfg, env={})
    engine = engine_from_config(config)
    upgrade(engine)
    preset = config.ingest.presets["movielens"]
    ingest_items(engine, data / "items.csv", preset.items, reject_path=work / "rej-items.jsonl")
    ingest_events(engine, work / "past.csv", preset.events, config.event_types, reject_path=work / "rej-ev.jsonl")
    t0 = time.perf_counter()
    run_embed(engine, config.encoders, text_encoder=build_text_encoder(config.encoders.text), image_encoder=None)
    log.info("embedded texts in %.1f s", time.perf_counter() - t0)
    t0 = time.perf_counter()
    train_feed(engine, config)
    log.info("trained the feed in %.1f s", time.perf_counter() - t0)
    engine.dispose()
    return config, future, cfg


def experiment(name: str, mode: str, variants: list[dict[str, Any]]) -> ExperimentConfig:
    return ExperimentConfig.model_validate({"name": name, "mode": mode, "variants": variants})


def activate(engine: Any, exp: ExperimentConfig) -> None:
    """Stop every stored experiment and store ``exp`` active (serving processes see it within 2 s)."""
    for old in stored_experiments(engine):
        if old.active:
            save_experiment(engine, old.model_copy(update={"active": False}), (), replace=True)
    save_experiment(engine, exp, (), replace=True)


def run_phase(base: str, exp: ExperimentConfig, users: list[str], future: dict[str, set[str]], model: ClickModel,
              n_requests: int, seed: int, deadline: float, threads: int = 3, k: int = 10) -> list[dict[str, Any]]:
    """``n_requests`` feed requests (user ``i`` = ``users[i % len]``), clicks posted; returns what was served."""
    time.sleep(2.5)  # the workers' experiment books refresh every 2 s

    def one(i: int) -> dict[str, Any] | None:
        if time.monotonic() > deadline:
            return None
        user = users[i % len(users)]
        s = session()
        got = s.get(f"{base}/v1/users/{user}/recommendations", params={"k": k}, timeout=60)
        got.raise_for_status()
        body = got.json()
        if body.get("experiment") != exp.name:
            raise RuntimeError(f"request {i}: served by experiment {body.get('experiment')!r}, expected {exp.name!r}")
        items = [it["id"] for it in body["items"]]
        clicked = model.clicks(items, future.get(user, set()), random.Random(request_seed(seed, i)))
        if clicked:
            ev = [{"user_id": user, "item_id": items[p], "event_type": "click", "request_id": body["request_id"],
                   "position": p} for p in clicked]
            s.post(f"{base}/v1/events", json={"events": ev}, headers={"X-API-Key": KEY}, timeout=60).raise_for_status()
        return {"i": i, "user": user, "request_id": body["request_id"], "items": items, "clicked": clicked}

    with ThreadPoolExecutor(threads) as pool:
        out = [r for r in pool.map(one, range(n_requests)) if r is not None]
    return out


_SESSIONS: dict[int, requests.Session] = {}


def session() -> requests.Session:
    import threading

    return _SESSIONS.setdefault(threading.get_ident(), requests.Session())


def outcomes_in_order(engine: Any, exp: ExperimentConfig, served: list[dict[str, Any]], timeout: float = 30.0) -> list[Any]:
    """The phase's list outcomes from SQL (through the report's reader), in serving order."""
    deadline = time.monotonic() + timeout
    while True:
        outs, _ = read_outcomes(engine, exp.name)
        by = {o.request_id: o for o in outs}
        if all(s["request_id"] in by for s in served) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    missing = [s["request_id"] for s in served if s["request_id"] not in by]
    if missing:
        raise RuntimeError(f"{len(missing)} served lists are not in SQL after {timeout} s")
    return [by[s["request_id"]] for s in served]


def analyse(exp: ExperimentConfig, outs: list[Any], step: int, alpha: float) -> dict[str, Any]:
    curve = sequential_p(exp, outs, step)
    rep = summarise(exp, outs)
    print(format_report(rep), flush=True)
    if rep.interleaving is not None:
        it = rep.interleaving
        decided = sum(it.wins.values())
        estimate = interleaving_lists_estimate(it.share, decided / max(it.lists, 1), alpha)
    else:
        estimate = ab_lists_estimate(rep.variants[0].ctr, rep.variants[1].ctr, alpha)
    return {"lists": len(outs), "final_p": curve[-1][1], "lists_needed": lists_needed(curve, alpha),
            "lists_needed_estimate_power80": estimate, "curve": curve, "report": rep.as_dict()}


def round_two(engine: Any, config: Any, base: str, users: list[str], future: dict[str, set[str]], model: ClickModel,
              n: int, seed: int, deadline: float) -> dict[str, Any]:
    """(c): a reranker trained on the logs so far (round 1) against the base hybrid, same users and coins."""
    from recsys.experiments.report import wilson
    from recsys.recommend.reranker_training import train_reranker

    from sqlalchemy import delete, select

    from recsys.store.models import Impression, ImpressionItem

    with engine.begin() as conn:  # the source fetches (no clicks possible) are bookkeeping, not traffic
        src = select(Impression.request_id).where(Impression.experiment.like("sim-src-%"))
        conn.execute(delete(ImpressionItem).where(ImpressionItem.request_id.in_(src)))
        gone = conn.execute(delete(Impression).where(Impression.experiment.like("sim-src-%"))).rowcount
    log.info("round 2: %d source-fetch lists left out of the log", gone)
    t0 = time.monotonic()
    rr = train_reranker(engine, config, source="impressions", seed=seed)
    # "model", not "reranker": that key is the reranker arm's result below
    out: dict[str, Any] = {"model": {"version": rr.version, **rr.info, "train_seconds": time.monotonic() - t0}}
    print(f"round 2: reranker {json.dumps(out['model'], default=str)}", flush=True)
    tag = int(time.time())
    clicked: dict[str, list[bool]] = {}
    # the reranker arm first: its skipped features read every list logged before, and the base arm's
    # round-2 lists (drawn with the same coins) must not be among them
    for arm, shares in (("reranker", (0.0, 1.0)), ("base", (1.0, 0.0))):
        exp = experiment(f"sim-r2-{arm}-{seed}-{tag}", "ab", [
            {"name": "base", "ranker": "hybrid", "share": shares[0]},
            {"name": "reranker", "ranker": "hybrid", "reranker": True, "share": shares[1]}])
        activate(engine, exp)
        served = run_phase(base, exp, users, future, model, n, seed, deadline)
        outs = outcomes_in_order(engine, exp, served)
        clicked[arm] = [bool(o.clicked) for o in outs]
        hits = sum(clicked[arm])
        out[arm] = {"lists": len(outs), "ctr": hits / max(len(outs), 1), "ctr_ci": wilson(hits, len(outs))}
        print(f"round 2, {arm}: CTR {out[arm]['ctr']:.4f} {out[arm]['ctr_ci']} over {len(outs)} lists", flush=True)
    m = min(len(clicked["base"]), len(clicked["reranker"]))
    diff, ci = paired_difference(clicked["base"][:m], clicked["reranker"][:m], seed=seed)
    out["difference"] = {"reranker_minus_base": diff, "ci95_paired_bootstrap": ci, "pairs": m}
    print(f"round 2: CTR(reranker) - CTR(base) = {diff:.4f}, 95% CI {ci}", flush=True)
    return out


def fetch_sources(engine: Any, base: str, users: list[str], variants: list[dict[str, Any]], seed: int,
                  deadline: float) -> dict[str, dict[str, list[str]]]:
    """Each variant's list for every user (one request each, no clicks), served to everybody in turn by a
    one-variant experiment: what the offline redraws assign and interleave."""
    out: dict[str, dict[str, list[str]]] = {}
    tag = int(time.time())
    for v in variants:
        exp = experiment(f"sim-src-{v['name']}-{seed}-{tag}", "ab", [{**v, "share": 1.0}, {**v, "name": "unused", "share": 0.0}])
        activate(engine, exp)
        served = run_phase(base, exp, users, {}, ClickModel(1.0, 0.0, 0.0), len(users), seed, deadline)
        out[v["name"]] = {s["user"]: s["items"] for s in served}
    return out


def redraws(result: dict[str, Any], phases: dict[str, ExperimentConfig], sources: dict[str, dict[str, list[str]]],
            users: list[str], future: dict[str, set[str]], model: ClickModel, args: argparse.Namespace) -> dict[str, Any]:
    """(a) and (b) as distributions over ``--redraws`` seeded redraws of assignment and clicks (same lists)."""
    seq = [users[i % len(users)] for i in range(args.requests)]
    kw = {"repeats": args.redraws, "alpha": args.alpha, "step": args.step, "seed": args.seed}
    out: dict[str, Any] = {}
    if "ab" in result:  # do the lists served live match the sources? (the feed is deterministic per user)
        same = [s == sources[v][u] for u, v, s in result["ab"].pop("_served", [])]
        out["ab_live_lists_equal_sources_share"] = sum(same) / max(len(same), 1)
    t0 = time.monotonic()
    out["ab"] = redraw_lists_needed(phases["ab"], sources, seq, future, model, **kw)
    for credit in ("exclusive", "team"):
        out[f"il_{credit}"] = redraw_lists_needed(phases["il"], sources, seq, future, model, credit=credit, **kw)
    hyb = sources["hybrid"]
    ail = experiment("sim-ail", "interleave", [{"name": "A", "ranker": "hybrid"}, {"name": "B", "ranker": "hybrid"}])
    for credit in ("exclusive", "team"):
        out[f"aa_il_{credit}"] = redraw_lists_needed(ail, {"A": hyb, "B": hyb}, seq, future, model, credit=credit, **kw)
    out["seconds"] = time.monotonic() - t0
    print(json.dumps(out, indent=1, default=str), flush=True)
    return out


def reanalyse(args: argparse.Namespace) -> None:
    """The statistics of an earlier run, from its lists and clicks in SQL (the report code as it is now)."""
    from recsys.config import load_config
    from recsys.experiments.store import find_experiment
    from recsys.store.db import engine_from_config

    old = json.loads(args.reanalyse.read_text())
    config = load_config(args.work / "config.yaml", env={})
    engine = engine_from_config(config)
    _past, future = temporal_split(pd.read_csv(args.data / "events.csv"))
    model = ClickModel(args.eta, args.p_future, args.p_other)
    result = {**old, "reanalysed": True}
    for name in ("ab", "il", "aa"):
        if name not in old:
            continue
        exp = find_experiment(engine, (), old[name]["report"]["experiment"])
        outs, _ = read_outcomes(engine, exp.name)
        result[name] = {**analyse(exp, outs, args.step, args.alpha), "seconds": old[name].get("seconds")}
        if name == "aa":
            lists = [(o.user, o.items) for o in outs]
            result["aa"]["offline_repeats"] = {
                str(a): aa_repeats(lists, future, model, args.aa_repeats, a, seed=args.seed) for a in (0.01, 0.05)}
    summary = {k: {kk: result[k][kk] for kk in ("lists", "final_p", "lists_needed", "lists_needed_estimate_power80")
                   if kk in result[k]} for k in ("ab", "il", "aa") if k in result}
    print(json.dumps(summary, indent=1))
    if "aa" in result:
        print(json.dumps(result["aa"]["offline_repeats"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "movielens-100k-posters")
    ap.add_argument("--work", type=Path, required=True, help="scratch folder (database, config, logs)")
    ap.add_argument("--requests", type=int, default=1500, help="feed requests per phase")
    ap.add_argument("--step", type=int, default=25, help="lists between p-value checkpoints")
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--aa-repeats", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eta", type=float, default=1.0)
    ap.add_argument("--p-future", type=float, default=0.5)
    ap.add_argument("--p-other", type=float, default=0.02)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-seconds", type=float, default=1800.0)
    ap.add_argument("--phases", default="ab,il,aa,src,r2",
                    help="src: fetch every user's list from each ranker and run the offline redraws")
    ap.add_argument("--redraws", type=int, default=100, help="seeded redraws for the lists-needed distributions")
    ap.add_argument("--r2-requests", type=int, default=800, help="feed requests per arm of round 2")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--reuse", action="store_true", help="reuse a database prepared by an earlier run in --work")
    ap.add_argument("--reanalyse", type=Path, help="recompute the statistics of an earlier run (its --json) from "
                                                   "the lists and clicks in --work's database; no serving")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from recsys.store.db import engine_from_config

    if args.reanalyse:
        reanalyse(args)
        return
    t_start = time.monotonic()
    load_before = machine_note()
    config, future, cfg = prepare(args.data, args.work, reuse=args.reuse)
    users = sorted(future)
    random.Random(args.seed).shuffle(users)
    model = ClickModel(args.eta, args.p_future, args.p_other)
    engine = engine_from_config(config)
    hyb = {"name": "hybrid", "ranker": "hybrid"}
    pop = {"name": "popularity", "ranker": "popularity"}
    tag = int(time.time())
    phases = {
        "ab": experiment(f"sim-ab-{args.seed}-{tag}", "ab", [hyb, pop]),
        "il": experiment(f"sim-il-{args.seed}-{tag}", "interleave", [hyb, pop]),
        "aa": experiment(f"sim-aa-{args.seed}-{tag}", "ab", [{"name": "A", "ranker": "hybrid"},
                                                             {"name": "B", "ranker": "hybrid"}]),
    }
    result: dict[str, Any] = {"seed": args.seed, "users": len(users), "click_model": vars(model),
                              "requests_per_phase": args.requests, "k": 10, "machine_before": load_before}
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")}
    env["RECSYS_CONFIG"] = str(cfg)
    deadline = t_start + args.max_seconds
    with gunicorn_server("services.wsgi:app", log_path=args.work / "gunicorn.log", cwd=REPO, env=env,
                         pythonpath=REPO, gunicorn_args=("-w", str(args.workers)), ready_path="/readyz",
                         start_timeout_s=900) as srv:
        for name in args.phases.split(","):
            if name == "src":
                sources = fetch_sources(engine, srv.base_url, users, [hyb, pop], args.seed, deadline)
                if args.json:  # before the redraws, so that offline analyses can start on them
                    args.json.with_suffix(".sources.json").write_text(json.dumps(sources))
                result["redraws"] = redraws(result, phases, sources, users, future, model, args)
                continue
            if name == "r2":
                result["r2"] = round_two(engine, config, srv.base_url, users, future, model, args.r2_requests,
                                         args.seed, deadline)
                continue
            exp = phases[name]
            activate(engine, exp)
            t0 = time.monotonic()
            served = run_phase(srv.base_url, exp, users, future, model, args.requests, args.seed, deadline)
            secs = time.monotonic() - t0
            outs = outcomes_in_order(engine, exp, served)
            log.info("phase %s: %d lists in %.1f s", name, len(served), secs)
            result[name] = {**analyse(exp, outs, args.step, args.alpha), "seconds": secs}
            if name == "ab":
                result[name]["_served"] = [(o.user, o.variant, list(o.items)) for o in outs]
            if name == "aa":
                lists = [(s["user"], tuple(s["items"])) for s in served]
                result["aa"]["offline_repeats"] = {
                    str(a): aa_repeats(lists, future, model, args.aa_repeats, a, seed=args.seed) for a in (0.01, 0.05)}
    result["machine_after"] = machine_note()
    result["seconds"] = time.monotonic() - t_start
    summary = {k: {kk: v[kk] for kk in ("lists", "final_p", "lists_needed") if kk in v}
               for k, v in result.items() if isinstance(v, dict) and "lists" in v}
    print(json.dumps(summary, indent=1))
    if "aa" in result:
        print(json.dumps(result["aa"]["offline_repeats"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
