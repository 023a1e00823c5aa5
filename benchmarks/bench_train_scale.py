"""Benchmark: how the feed model's training (with the per-catalogue CF tuning) scales with the log size.

For each size (default 100k, 1M and 10M generated events; users = events / 20, items = events / 100, Zipf
item popularity, each user's events in time order), two measurements, each in its own subprocess so that
its peak memory (``ru_maxrss``) is its own:

- **recsys train's fit**: ``HybridRecommender(config.cf, budget_s=config.train.budget_s).fit(history)``,
  what ``recsys train`` runs after reading the events table (CF tuning on a validation carve within
  ``train.budget_s``, the blend selection, the final fit); no content (an ids-only catalogue). Reading
  the table is measured by ``bench_train.py``.
- **implicit ALS alone**: implicit's own ``AlternatingLeastSquares.fit`` with the ``cf`` defaults (32
  factors, 15 iterations) on the same matrix, the baseline of the ratio.

Run: ``python benchmarks/bench_train_scale.py [--sizes 100000,1000000,10000000] [--threads 2] [--budget 240]
[--json PATH]``. Prints one row per size: wall seconds, CPU seconds and peak MB of both, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def generated_history(n_events: int, seed: int = 0):  # type: ignore[no-untyped-def]
    """A history of ``n_events`` events: users ``n_events // 20``, items ``n_events // 100``."""
    from recsys.cf.history import History

    n_users, n_items = max(n_events // 20, 10), max(n_events // 100, 10)
    rng = np.random.default_rng(seed)
    user = np.sort(rng.integers(0, n_users, n_events))
    item = ((rng.zipf(1.3, n_events) - 1) + rng.integers(0, 7, n_events) * (n_items // 7)) % n_items
    return History.from_events(user, item.astype(np.int64), n_users, n_items)


def child(kind: str, n_events: int, threads: int, budget: float) -> dict[str, object]:
    """One measurement (run in a subprocess): ``train`` or ``als``."""
    from recsys.config import Config

    cfg = Config().cf.model_copy(update={"num_threads": threads})
    history = generated_history(n_events)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0, c0 = time.perf_counter(), time.process_time()
    info: dict[str, object] = {}
    if kind == "train":
        from recsys.recommend.hybrid import HybridRecommender

        rec = HybridRecommender(cfg, budget_s=budget).fit(history)
        tuning = rec.selection.get("tuning", {})
        info = {"component": tuning.get("component"), "trials": len(tuning.get("trials", [])),
                "out_of_budget": tuning.get("out_of_budget"), "tuning_s": tuning.get("seconds"),
                "seq_weight": rec.params.seq_weight if rec.params else None}
    else:
        from implicit.cpu.als import AlternatingLeastSquares

        from recsys.cf.matrix import apply_confidence

        model = AlternatingLeastSquares(factors=cfg.factors, regularization=cfg.regularization, alpha=1.0,
                                        iterations=cfg.iterations, random_state=0, num_threads=threads)
        model.fit(apply_confidence(history.matrix(), cfg), show_progress=False)
    return {"kind": kind, "events": n_events, "users": history.n_users, "items": history.n_items,
            "pairs": int(history.items.shape[0]), "wall_s": time.perf_counter() - t0,
            "cpu_s": time.process_time() - c0, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_before_fit_mb": base_rss / 1024, **info}


def run_child(kind: str, n_events: int, threads: int, budget: float, timeout: float) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--child", kind, "--sizes", str(n_events), "--threads", str(threads),
           "--budget", str(budget)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"kind": kind, "events": n_events, "error": f"did not finish within {timeout:.0f}s"}
    if out.returncode != 0:
        return {"kind": kind, "events": n_events, "error": out.stderr.strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000,10000000")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=None, help="train.budget_s (default: the config's)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per measurement")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH")
    parser.add_argument("--child", choices=["train", "als"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from recsys.config import Config

    budget = args.budget if args.budget is not None else Config().train.budget_s
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.child:
        print(json.dumps(child(args.child, sizes[0], args.threads, budget)))
        return
    print(f"load average before: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores "
          f"(shared machine: wall times stretch with the load, CPU times much less); budget {budget:.0f}s")
    rows = []
    head = f"{'events':>10} {'users':>8} {'items':>7} | {'train wall s':>12} {'CPU s':>7} {'peak MB':>8} | " \
           f"{'ALS wall s':>10} {'CPU s':>7} {'peak MB':>8} | {'wall ratio':>10}  component"
    print(head)
    print("-" * len(head))
    for n in sizes:
        als = run_child("als", n, args.threads, budget, args.timeout)
        train = run_child("train", n, args.threads, budget, args.timeout)
        rows.append({"events": n, "train": train, "als": als})
        if "error" in train or "error" in als:
            print(f"{n:>10,} {'':>8} {'':>7} | train: {train.get('error', 'ok')}; ALS: {als.get('error', 'ok')}")
            continue
        print(f"{n:>10,} {train['users']:>8,} {train['items']:>7,} | {train['wall_s']:>12.1f} {train['cpu_s']:>7.1f} "
              f"{train['peak_mb']:>8.0f} | {als['wall_s']:>10.1f} {als['cpu_s']:>7.1f} {als['peak_mb']:>8.0f} | "
              f"{train['wall_s'] / max(als['wall_s'], 1e-9):>10.1f}  {train['component']} "
              f"({train['trials']} trials, out of budget: {train['out_of_budget']})", flush=True)
    print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"bench": "train_scale", "budget_s": budget, "threads": args.threads,
                                         "cpus": os.cpu_count(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
