"""In-process retrieval benchmark: exact numpy scan vs ScaNN on synthetic embedding-like vectors.

Data (``--data clustered``, the default): :func:`recsys.index.synthetic.clustered_vectors`, a Gaussian
mixture of ``n / 500`` clusters (at most 4,000) with Zipf-like sizes, per-cluster spread, a shared
direction and a decaying spectrum, L2-normalised; ``--data uniform`` draws uniform noise on the sphere
(the hardest case for any index, unlike real embeddings). Queries are held-out draws of the same
distribution, not indexed rows.

Prints one markdown table: build time, the build-time recall (manifest), exact single-query latency,
ScaNN single-query latency (wall and thread CPU time, p50/p99) and recall@k vs exact on the held-out
queries, a deep candidate list (k=300, what a reranker consumes) and filtered queries (exclude the
nearest row; an allow mask of 10% of rows).

    python benchmarks/bench_index.py                 # 1,000,000 x 128
    python benchmarks/bench_index.py --n 200000 --sweep
    python benchmarks/bench_index.py --n 20000 --json out.json   # also write the figures as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.index.exact import ExactRetriever  # noqa: E402
from recsys.index.factory import build_index  # noqa: E402
from recsys.index.publish import load_active, publish  # noqa: E402
from recsys.index.settings import IndexConfig  # noqa: E402
from recsys.index.synthetic import clustered_vectors  # noqa: E402


def uniform_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def latencies(fn: Callable[[int], object], n: int, warmup: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Wall and thread-CPU milliseconds of ``fn(i)`` for ``i < n`` (after ``warmup`` calls)."""
    for i in range(min(warmup, n)):
        fn(i)
    wall = np.empty(n)
    cpu = np.empty(n)
    for i in range(n):
        c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
        fn(i)
        wall[i] = (time.perf_counter_ns() - w0) / 1e6
        cpu[i] = (time.thread_time_ns() - c0) / 1e6
    return wall, cpu


def recall(truth: np.ndarray, got: np.ndarray) -> float:
    hits = sum(len(np.intersect1d(t[t >= 0], g[g >= 0])) for t, g in zip(truth, got, strict=True))
    return hits / max(1, int((truth >= 0).sum()))


def fmt(a: np.ndarray) -> str:
    return f"{np.percentile(a, 50):.3f} / {np.percentile(a, 99):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=1000, help="held-out queries for ScaNN latency and recall")
    ap.add_argument("--exact-queries", type=int, default=100, help="queries timed on the exact scan")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--deep-k", type=int, default=300, help="k of the candidate-list row")
    ap.add_argument("--data", choices=["clustered", "uniform"], default="clustered")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--leaves-to-search", type=int, default=None)
    ap.add_argument("--num-leaves", type=int, default=None)
    ap.add_argument("--reorder", type=int, default=None)
    ap.add_argument("--training-sample", type=int, default=None)
    ap.add_argument("--no-spherical", dest="spherical", action="store_false", help="plain k-means partitioning")
    ap.add_argument("--sweep", action="store_true", help="also sweep leaves_to_search x reorder at query time")
    ap.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the figures as JSON here")
    args = ap.parse_args()

    overrides = {
        k: v
        for k, v in {
            "leaves_to_search": args.leaves_to_search,
            "num_leaves": args.num_leaves,
            "reorder": args.reorder,
            "training_sample": args.training_sample,
        }.items()
        if v is not None
    }
    cfg = IndexConfig(backend="scann", seed=args.seed, spherical=args.spherical, **overrides)

    t0 = time.perf_counter()
    gen = clustered_vectors if args.data == "clustered" else None
    total = args.n + args.queries
    allv = gen(total, args.dim, seed=args.seed) if gen else uniform_vectors(total, args.dim, args.seed)
    queries, db = allv[: args.queries].copy(), np.ascontiguousarray(allv[args.queries :])
    del allv
    gen_s = time.perf_counter() - t0

    exact = ExactRetriever(db, cfg)
    t0 = time.perf_counter()
    deep_truth, _ = exact.search(queries, max(args.k, args.deep_k))
    truth = deep_truth[:, : args.k]
    deep_truth = deep_truth[:, : args.deep_k]
    truth_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    index = build_index(db, cfg)
    build_s = time.perf_counter() - t0
    info = index.info

    ex_wall, ex_cpu = latencies(lambda i: exact.search(queries[i], args.k), min(args.exact_queries, args.queries), 3)
    sc_wall, sc_cpu = latencies(lambda i: index.search(queries[i], args.k), args.queries)
    got = np.stack([index.search(q, args.k)[0] for q in queries])
    rec = recall(truth, got)

    # Deep candidate lists (what a reranker consumes).
    dp_wall, _ = latencies(lambda i: index.search(queries[i], args.deep_k), args.queries)
    dp_got = np.stack([index.search(q, args.deep_k)[0] for q in queries])

    # Filtered: exclude each query's nearest row; allow 10% of rows (a category filter).
    nearest = truth[:, :1]
    ex_truth, _ = exact.search(queries, args.k, exclude=[list(r) for r in nearest])
    fx_wall, _ = latencies(lambda i: index.search(queries[i], args.k, exclude=nearest[i]), args.queries)
    fx_got = np.stack([index.search(q, args.k, exclude=nearest[i])[0] for i, q in enumerate(queries)])
    allow = np.random.default_rng(args.seed + 1).random(len(db)) < 0.10
    al_truth, _ = exact.search(queries, args.k, allow=allow)
    al_wall, _ = latencies(lambda i: index.search(queries[i], args.k, allow=allow), args.queries)
    al_got = np.stack([index.search(q, args.k, allow=allow)[0] for q in queries])

    # Publish (save + fsync + rename) and load back, as a service reload would.
    with tempfile.TemporaryDirectory(prefix="bench_index_") as tmp:
        t0 = time.perf_counter()
        publish(index, Path(tmp) / "index-items", version="bench")
        publish_s = time.perf_counter() - t0
        size_mb = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file()) / 2**20
        t0 = time.perf_counter()
        loaded = load_active(Path(tmp) / "index-items")
        load_s = time.perf_counter() - t0
        same = all(
            np.array_equal(loaded.search(q, args.k)[0], index.search(q, args.k)[0]) for q in queries[:100]
        )
        del loaded

    p = info["params"]
    params = ", ".join(f"{k}={v}" for k, v in p.items() if k != "mode")
    print()
    print(f"### Index benchmark: n={args.n:,} dim={args.dim} data={args.data} k={args.k}")
    print()
    print(f"Machine: {platform.machine()} {os.cpu_count()} CPUs, {platform.python_implementation()} "
          f"{platform.python_version()}, numpy {np.__version__}; load average at end {os.getloadavg()[0]:.2f}")
    print(f"ScaNN {p['mode']}: {params}")
    print()
    print("| measure | value |")
    print("|---|---|")
    print(f"| data generation | {gen_s:.1f} s |")
    print(f"| ScaNN build (training + recall check) | {build_s:.1f} s (recall check {info['recall']['seconds']:.1f} s) |")
    print(f"| build-time recall@{cfg.recall_k} (manifest; {info['recall']['queries']} indexed rows, self excluded) | {info['recall_at_k']:.4f} |")
    print(f"| exact batch of {args.queries} queries, k={max(args.k, args.deep_k)} (ground truth) | {truth_s:.1f} s |")
    print(f"| exact numpy scan, single query, wall p50 / p99 | {fmt(ex_wall)} ms |")
    print(f"| ScaNN single query, wall p50 / p99 | {fmt(sc_wall)} ms |")
    print(f"| ScaNN single query, thread CPU p50 / p99 | {fmt(sc_cpu)} ms |")
    print(f"| ScaNN recall@{args.k} vs exact ({args.queries} held-out queries) | {rec:.4f} |")
    print(f"| ScaNN k={args.deep_k} (reranking candidates), wall p50 / p99; recall@{args.deep_k} | "
          f"{fmt(dp_wall)} ms; {recall(deep_truth, dp_got):.4f} |")
    print(f"| ScaNN + exclude 1 row, wall p50 / p99; recall | {fmt(fx_wall)} ms; {recall(ex_truth, fx_got):.4f} |")
    print(f"| ScaNN + allow mask 10% of rows, wall p50 / p99; recall | {fmt(al_wall)} ms; {recall(al_truth, al_got):.4f} |")
    print(f"| publish (save, fsync, rename) / load of the active version | {publish_s:.1f} s / {load_s:.1f} s "
          f"({size_mb:,.0f} MiB on disk; loaded copy returns identical results: {same}) |")
    print(f"| speed-up ScaNN vs exact (p50) | {np.percentile(ex_wall, 50) / np.percentile(sc_wall, 50):.0f}x |")

    if args.json:
        def pcts(a: np.ndarray) -> dict[str, float]:
            return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99))}

        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "bench": "index", "n": args.n, "dim": args.dim, "data": args.data, "k": args.k, "queries": args.queries,
            "cpus": os.cpu_count(), "load_average": list(os.getloadavg()), "mode": p["mode"], "params": p,
            "generate_s": gen_s, "build_s": build_s, "build_recall": info["recall_at_k"],
            "exact_wall": pcts(ex_wall), "exact_cpu": pcts(ex_cpu), "scann_wall": pcts(sc_wall), "scann_cpu": pcts(sc_cpu),
            "recall": rec, "deep": {"k": args.deep_k, **pcts(dp_wall), "recall": recall(deep_truth, dp_got)},
            "exclude_one": {**pcts(fx_wall), "recall": recall(ex_truth, fx_got)},
            "allow_10pct": {**pcts(al_wall), "recall": recall(al_truth, al_got)},
            "publish_s": publish_s, "load_s": load_s, "size_mib": size_mb, "loaded_identical": same,
        }, indent=2, default=str))

    if args.sweep and p["mode"] != "brute_force":
        searcher = index._searcher  # type: ignore[attr-defined]  # noqa: SLF001 - benchmark only
        print()
        print("| leaves_to_search | reorder | recall | wall p50 / p99 ms | CPU p50 / p99 ms |")
        print("|---|---|---|---|---|")
        leaves = p.get("num_leaves")
        for lts in ([16, 24, 32, 48] if leaves else [-1]):
            for ro in (150, 250, 400):
                res = [searcher.search(q, args.k, ro, lts)[0] for q in queries]
                def one(i: int, lts: int = lts, ro: int = ro) -> object:
                    return searcher.search(queries[i], args.k, ro, lts)

                w, c = latencies(one, args.queries)
                print(f"| {lts} | {ro} | {recall(truth, np.stack(res).astype(np.int64)):.4f} | {fmt(w)} | {fmt(c)} |")


if __name__ == "__main__":
    main()
