"""Batch export throughput: top-k for every user of a synthetic catalogue, through `recsys export`'s code.

A synthetic feed model (random CF factors and content vectors of dimension ``--dim``, settings fixed:
CF + content profile (cosine to the user's weighted mean item, gamma 0) + popularity) over ``--items``
items, and ``--users`` users with ``--history`` items each (Zipf-popular). The export runs
:func:`recsys.export.job.run_export` (the ranking the service uses, chunked, Parquet sink) and reports
users/s and the process's peak RSS. Baseline in the same run: the bare ``user_vectors @ item_factors.T``
+ ``argpartition`` top-k over the same users (no standardisation, blend, filters or writing).

    python benchmarks/bench_export.py --users 1000000 --items 100000 --dim 64
    python benchmarks/bench_export.py --users 200000 --items 10000 --dim 64
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.cf.history import History  # noqa: E402
from recsys.cf.settings import CFConfig  # noqa: E402
from recsys.export.job import ExportContext, ExportOptions, run_export  # noqa: E402
from recsys.export.writers import open_sink  # noqa: E402
from recsys.ranking.hybrid import HybridComponents, HybridParams  # noqa: E402
from recsys.ranking.ranker import FeedRanker  # noqa: E402
from recsys.recommend.model import FeedModel  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic(n_users: int, n_items: int, dim: int, per_user: int, seed: int = 0) -> tuple[FeedModel, History]:
    rng = np.random.default_rng(seed)
    factors = (rng.normal(size=(n_items, dim)) / np.sqrt(dim)).astype(np.float32)
    content = rng.normal(size=(n_items, dim)).astype(np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    counts = np.full(n_users, per_user, dtype=np.int64)
    user = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    item = (rng.zipf(1.2, user.shape[0]) - 1) % n_items
    history = History.from_events(user, item.astype(np.int64), n_users, n_items)
    warm = history.item_counts() > 0
    pop = np.log1p(history.item_counts()).astype(np.float32)
    pop = (pop - pop.mean()) / max(pop.std(), 1e-6)
    params = HybridParams(recency_tau=10.0, recency_beta=10.0, profile_tau=10.0, profile_gamma=0.0, warm_cf=1.0,
                          warm_content=0.5, warm_pop=0.25, cold_cf=1.0, cold_content=1.0, cold_pop=0.0,
                          cold_profile_tau=10.0, cold_offset=-0.5)
    comp = HybridComponents(factors, warm, pop.astype(np.float32), (content,), None, 0.0)
    model = FeedModel(np.array([f"i{j}" for j in range(n_items)], dtype=object), params, CFConfig(factors=dim),
                      comp, None, None, 0.0, 1.0, {"text": "synthetic"}, version="synthetic")
    return model, history


def baseline(model: FeedModel, history: History, k: int, chunk: int, limit: int) -> float:
    """users/s of bare matrix-product top-k (user factors: the mean of their items' factors)."""
    f = model.components.item_factors
    n = min(history.n_users, limit)
    t0 = time.perf_counter()
    for start in range(0, n, chunk):
        rows = history.select(np.arange(start, min(start + chunk, n)))
        u = np.asarray(rows.matrix() @ f)
        s = u @ f.T
        np.argpartition(-s, k, axis=1)[:, :k]
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--history", type=int, default=10, help="items per user")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--chunk", type=int, default=2048, help="users per chunk (recsys export --chunk-size)")
    ap.add_argument("--json", dest="json_path", default=None, help="also write the figures as JSON here")
    args = ap.parse_args()

    t0 = time.perf_counter()
    model, history = synthetic(args.users, args.items, args.dim, args.history)
    setup_s = time.perf_counter() - t0
    ranker = FeedRanker.build(model, list(model.item_ids), exact_max_items=max(args.items, 100_000))
    ids = tuple(model.item_ids)
    ctx = ExportContext(ids=ids, categories=(None,) * len(ids), available=np.ones(len(ids), bool),
                        content=model.components.content[0], feed=ranker, similar_index=None,
                        similar_vectors=model.components.content[0], versions={"model": "synthetic"})
    users = np.array([f"u{u}" for u in range(args.users)], dtype=object)
    rss_before = peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "recs.parquet"
        t1 = time.perf_counter()
        res = run_export(ctx, ExportOptions(k=args.k, chunk_size=args.chunk),
                         lambda spec, schema: open_sink(str(out), "parquet", None, None, spec, schema),
                         histories=(users, history), register=False, progress=sys.stderr.isatty())
        export_s = time.perf_counter() - t1
        size_mb = out.stat().st_size / 1e6
    base = baseline(model, history, args.k, args.chunk, limit=min(args.users, 100_000))
    figures = {
        "users": args.users, "items": args.items, "dim": args.dim, "k": args.k, "history": args.history,
        "setup_seconds": round(setup_s, 1), "export_seconds": round(export_s, 1),
        "users_per_s": round(args.users / export_s), "baseline_matmul_topk_users_per_s": round(base),
        "peak_rss_mb": round(peak_rss_mb()), "peak_rss_mb_before_export": round(rss_before),
        "parquet_mb": round(size_mb, 1), "rows": res.rows, "cores": os.cpu_count(),
    }
    print("| users | items | dim | k | export s | users/s | bare matmul+top-k users/s | peak RSS MB | parquet MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.users:,} | {args.items:,} | {args.dim} | {args.k} | {export_s:,.1f} | {figures['users_per_s']:,} | "
          f"{figures['baseline_matmul_topk_users_per_s']:,} | {figures['peak_rss_mb']:,} | {size_mb:,.1f} |")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
