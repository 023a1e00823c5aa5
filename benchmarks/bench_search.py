"""Search latency at catalogue scale: hybrid (lexical + dense + attributes) beside dense-only, in one run.

A gunicorn worker (``-w 1``, the sync class of the production command) builds a synthetic catalogue of ``--items`` items in memory -- titles and descriptions from
a vocabulary of colours, product types, groups, adjectives and 5,000 filler words, three attribute columns,
prices, clustered unit vectors (:func:`recsys.index.synthetic.clustered_vectors`, ``--dim``) -- with the
project's code (:class:`recsys.search.lexical.LexicalIndex`, :class:`recsys.search.hybrid.SearchText`, and above
``search.exact_max_items`` the dense index the service would publish, ``build_index`` with the ``index`` config), lays
it into a :class:`recsys.serving.Runtime` (no feed model: search without ``user_id``), times
``Runtime.search`` in process for each mode, and then serves the real Flask app (``services.app.create_app``).
This process sends ``POST /v1/search`` requests one at a time and measures p50 / p99 per mode. The server also
measures recall@10 of the served (candidate) ranking against the exact full-array ranking on 50 queries.
Modes are interleaved query by query, so drifts in the machine's load affect each alike.

The query vector comes from a stand-in text encoder (a hash of the text -> a unit vector near one item's), the
same for every mode, so the figures are retrieval and ranking; the real text encoder's time per query (the
same in every mode) is measured separately with ``--encoder`` and printed beside them.

    python benchmarks/bench_search.py --items 1000000            # the issue's size
    python benchmarks/bench_search.py --items 20000 --queries 50  # smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

COLOURS = ["black", "white", "dark blue", "light blue", "red", "green", "beige", "grey", "pink", "yellow",
           "dark grey", "light pink", "orange", "khaki", "navy", "brown", "purple", "turquoise", "off white", "gold"]
TYPES = ["trousers", "dress", "vest top", "sweater", "t-shirt", "shorts", "skirt", "blouse", "jacket", "hoodie",
         "shirt", "leggings", "bikini top", "swimsuit", "socks", "bra", "cardigan", "coat", "jumpsuit", "sneakers",
         "boots", "sandals", "bag", "hat", "scarf", "belt", "pyjama set", "underwear bottom", "blazer", "top"]
GROUPS = ["ladieswear", "menswear", "baby children", "divided", "sport"]
ADJECTIVES = ["slim", "wide", "relaxed", "cropped", "oversized", "fitted", "soft", "ribbed", "printed", "padded",
              "linen", "cotton", "denim", "jersey", "knitted", "lace", "satin", "striped", "basic", "premium"]
MODES = ("semantic", "hybrid", "lexical")


def synthetic_items(n: int, seed: int = 0) -> dict[str, Any]:
    """Titles, documents, categories, attributes and prices of ``n`` items (a pure function of the seed)."""
    from recsys.search.text import item_document

    rng = np.random.default_rng(seed)
    filler = [f"w{i}x" for i in range(5000)]
    c, t, g, a = (rng.integers(len(x), size=n) for x in (COLOURS, TYPES, GROUPS, ADJECTIVES))
    f = rng.integers(len(filler), size=(n, 8))
    titles, docs, cats, attrs = [], [], [], []
    for i in range(n):
        title = f"{ADJECTIVES[a[i]].title()} {COLOURS[c[i]]} {TYPES[t[i]]} {filler[f[i, 0]]}"
        attr = {"colour": COLOURS[c[i]].title(), "group": GROUPS[g[i]].title()}
        titles.append(title)
        cats.append(TYPES[t[i]].title())
        attrs.append(attr)
        docs.append(item_document(title, " ".join(filler[j] for j in f[i, 1:]), cats[-1], attr))
    return {"titles": titles, "docs": docs, "categories": cats, "attributes": attrs,
            "prices": np.round(rng.uniform(5, 200, n), 2)}


def queries(n: int, seed: int = 1) -> list[str]:
    """Attribute queries, some with a group, some with a typo, some with a filler word."""
    from recsys.evaluation.query_sets import typo_query

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        words = [COLOURS[rng.integers(len(COLOURS))], TYPES[rng.integers(len(TYPES))]]
        if i % 3 == 1:
            words.insert(0, GROUPS[rng.integers(len(GROUPS))])
        if i % 5 == 2:
            words.insert(0, ADJECTIVES[rng.integers(len(ADJECTIVES))])
        q = " ".join(words)
        out.append(typo_query(q, rng) if i % 4 == 3 else q)
    return out


def stand_in_encoder(vectors: np.ndarray, noise: float = 0.5) -> Any:
    """A text -> a unit vector near one item's (the row and the noise drawn from a hash of the text): a query
    lands among the items it is about, as an aligned text encoder's do, at no model cost."""
    n, dim = vectors.shape

    def encode(batch: list[str]) -> np.ndarray:
        out = []
        for text in batch:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            v = vectors[seed % n] + noise * np.random.default_rng(seed).normal(size=dim) / np.sqrt(dim)
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, np.float32)

    return encode


def build_runtime(n: int, dim: int, data_dir: Path) -> tuple[Any, dict[str, float]]:
    """A :class:`Runtime` serving the synthetic catalogue (state laid in directly), and build timings."""
    from recsys.config import Config
    from recsys.index.factory import build_index
    from recsys.index.synthetic import clustered_vectors
    from recsys.search.engine import Catalogue, ProductSearch
    from recsys.search.hybrid import SearchText
    from recsys.search.lexical import LexicalIndex
    from recsys.serving.runtime import Runtime
    from recsys.serving.state import ServingState
    from recsys.store.db import make_engine, upgrade

    timings = {}
    t0 = time.perf_counter()
    items = synthetic_items(n)
    vectors = clustered_vectors(n, dim, seed=0)
    timings["generate_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    lexical = LexicalIndex.build(items["docs"])
    timings["lexical_build_s"] = time.perf_counter() - t0
    config = Config(data_dir=data_dir)
    t0 = time.perf_counter()
    ids = tuple(f"S{i:07d}" for i in range(n))
    cat = Catalogue(ids, tuple(items["titles"]), tuple(items["categories"]), np.ones(n, bool), vectors, space="synthetic")
    search = ProductSearch(cat, stand_in_encoder(vectors))
    search.text_index = SearchText.build(lexical, items["categories"], items["attributes"], items["prices"],
                                         config.search, "synthetic")
    timings["search_state_s"] = time.perf_counter() - t0
    if n > config.search.exact_max_items:  # as the service: an ANN index over the vectors, the candidate path
        t0 = time.perf_counter()
        search.dense_index = build_index(vectors, config.index)
        timings["dense_index_build_s"] = time.perf_counter() - t0
        timings["dense_index_recall_at_10"] = search.dense_index.info.get("recall_at_k")
        timings["dense_index_backend"] = search.dense_index.backend
    del items
    engine = make_engine(f"sqlite:///{data_dir / 'recsys.sqlite'}")
    upgrade(engine)
    rt = Runtime(config, engine)
    zeros = np.zeros(n, np.float32)
    rt._state = ServingState(ids, cat.titles, cat.categories, cat.available, vectors, None, zeros, zeros + 1,
                       search.text_index.prices, {e: i for i, e in enumerate(ids)}, {}, None, None, None, search,
                       vectors, None, {})
    rt._checked = time.monotonic() + 1e9  # nothing to reload: the state was laid in by hand
    return rt, timings


def _pct(values: list[float]) -> dict[str, float]:
    a = np.asarray(values) * 1000
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "n": len(values)}


def in_process(rt: Any, qs: list[str]) -> dict[str, dict[str, float]]:
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for q in qs[:5]:  # warm-up
        for m in MODES:
            rt.search(text=q, image=None, user_id=None, k=10, mode=m)
    for q in qs:
        for m in MODES:
            t0 = time.perf_counter()
            rt.search(text=q, image=None, user_id=None, k=10, mode=m)
            times[m].append(time.perf_counter() - t0)
    return {m: _pct(v) for m, v in times.items()}


def candidate_recall(rt: Any, qs: list[str], k: int = 10) -> tuple[dict[str, float], dict[str, Any]] | None:
    """Mean recall@``k`` of the served (candidate) ranking against the exact full-array one, per mode that uses
    dense scores, and both rankings' time in process (``run_search`` alone: no encoder); ``None``: the catalogue
    is small enough to be ranked exactly anyway."""
    from copy import copy

    from recsys.search.hybrid import SearchRequest, run_search

    search = rt._st().search
    if search.dense_index is None:
        return None
    exact = copy(search)
    exact.dense_index = None
    out, times = {}, {}
    for mode, fusion in (("hybrid", "linear"), ("hybrid", "rrf"), ("semantic", "linear")):
        hits, t_exact, t_fast = [], [], []
        for q in qs:
            req = SearchRequest(text=q, k=k, mode=mode, fusion=fusion)
            t0 = time.perf_counter()
            want = run_search(exact, req, rt.config.search).rows
            t1 = time.perf_counter()
            got = run_search(search, req, rt.config.search).rows
            t_exact.append(t1 - t0)
            t_fast.append(time.perf_counter() - t1)
            hits.append(len(set(got.tolist()) & set(want.tolist())) / max(len(want), 1))
        name = mode if mode == "semantic" else f"{mode}-{fusion}"
        out[name] = float(np.mean(hits))
        times[name] = {"exact": _pct(t_exact), "candidates": _pct(t_fast)}
    return out, times


def served_app() -> Any:
    """gunicorn's app factory (``bench_search:served_app()``): build from ``$BENCH_SEARCH_ITEMS`` /
    ``_DIM`` / ``_QUERIES``, time in process, write the figures to ``$BENCH_SEARCH_OUT``, return the app."""
    import resource
    import tempfile

    from services.app import create_app, limit_threads

    limit_threads(1)  # as a serving process (service.threads): one request at a time, BLAS threads only spin
    n, dim, nq = (int(os.environ[f"BENCH_SEARCH_{k}"]) for k in ("ITEMS", "DIM", "QUERIES"))
    rt, timings = build_runtime(n, dim, Path(tempfile.mkdtemp(prefix="bench-search-")))
    recall = candidate_recall(rt, queries(min(nq, 50), seed=7))
    result = {"build": timings, "in_process": in_process(rt, queries(nq)),
              "recall_vs_exact": recall[0] if recall else None, "exact_vs_candidates": recall[1] if recall else None,
              "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    Path(os.environ["BENCH_SEARCH_OUT"]).write_text(json.dumps(result))
    return create_app(rt.config, rt)


def over_http(base_url: str, qs: list[str]) -> dict[str, dict[str, float]]:
    import requests

    session = requests.Session()
    url = f"{base_url}/v1/search"
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for q in qs[:5]:
        for m in MODES:
            session.post(url, json={"text": q, "k": 10, "mode": m}, timeout=30).raise_for_status()
    for q in qs:
        for m in MODES:
            t0 = time.perf_counter()
            r = session.post(url, json={"text": q, "k": 10, "mode": m}, timeout=30)
            times[m].append(time.perf_counter() - t0)
            r.raise_for_status()
    return {m: _pct(v) for m, v in times.items()}


def encoder_timing(qs: list[str]) -> dict[str, float] | None:
    from recsys.config import Config
    from recsys.encoders.factory import build_text_encoder

    enc = build_text_encoder(Config().encoders.text, "cpu")
    enc.encode(qs[:2])
    times = []
    for q in qs:
        t0 = time.perf_counter()
        enc.encode([q])
        times.append(time.perf_counter() - t0)
    return {**_pct(times), "encoder": enc.version}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--encoder", action="store_true", help="also time the configured text encoder per query")
    p.add_argument("--json", dest="json_path", default=None)
    args = p.parse_args()
    import tempfile

    from http_load import gunicorn_server, machine_note  # type: ignore[import-not-found]

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench-search-"))
    env = {**os.environ, "BENCH_SEARCH_ITEMS": str(args.items), "BENCH_SEARCH_DIM": str(args.dim),
           "BENCH_SEARCH_QUERIES": str(args.queries), "BENCH_SEARCH_OUT": str(work / "in_process.json"),
           "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)])}
    with gunicorn_server("bench_search:served_app()", log_path=work / "gunicorn.log", cwd=REPO, env=env,
                         pythonpath=HERE, gunicorn_args=("-w", "1"), start_timeout_s=1200) as server:
        result = json.loads((work / "in_process.json").read_text())
        result["http"] = over_http(server.base_url, queries(args.queries))
    if args.encoder:
        result["encoder"] = encoder_timing(queries(args.queries)[:100])
    result.update(items=args.items, dim=args.dim, seconds=time.perf_counter() - t0, load_before=load_before,
                  load_after=os.getloadavg(), machine=machine_note())
    print(table(result))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(result, indent=2))


def table(r: dict[str, Any]) -> str:
    ip, http = r["in_process"], r["http"]
    lines = [(f"search latency, {r['items']:,} synthetic items x {r['dim']} dims ({r['machine']}; load average "
              f"{r['load_before'][0]:.1f} before, {r['load_after'][0]:.1f} after; server RSS {r['rss_mb']:.0f} MB; "
              f"lexical index built in {r['build']['lexical_build_s']:.1f}s{_dense_note(r['build'])})"), "",
             "| mode | in process p50 / p99 | HTTP p50 / p99 | HTTP p99 / dense-only HTTP p99 |", "|---|---|---|---|"]
    for m in MODES:
        ratio = http[m]["p99_ms"] / http["semantic"]["p99_ms"]
        lines.append(f"| {m} | {ip[m]['p50_ms']:.2f} / {ip[m]['p99_ms']:.2f} ms | {http[m]['p50_ms']:.2f} / "
                     f"{http[m]['p99_ms']:.2f} ms | {ratio:.2f}x |")
    if r.get("recall_vs_exact"):
        lines.append("\nrecall@10 of the served (candidate) ranking vs the exact full-array ranking, 50 queries: "
                     + ", ".join(f"{m} {v:.3f}" for m, v in r["recall_vs_exact"].items()))
    if r.get("exact_vs_candidates"):
        lines.append("run_search alone, exact full-array path (as before) vs candidate path, p50 / p99 ms: " + "; ".join(
            f"{m} {t['exact']['p50_ms']:.1f} / {t['exact']['p99_ms']:.1f} vs {t['candidates']['p50_ms']:.1f} / "
            f"{t['candidates']['p99_ms']:.1f}" for m, t in r["exact_vs_candidates"].items()))
    if r.get("encoder"):
        e = r["encoder"]
        lines.append(f"\ntext encoder {e['encoder']} per query (same in every mode, not included above): "
                     f"p50 {e['p50_ms']:.1f} ms, p99 {e['p99_ms']:.1f} ms")
    return "\n".join(lines)


def _dense_note(b: dict[str, Any]) -> str:
    if "dense_index_build_s" not in b:
        return "; dense scores: exact scan (catalogue <= search.exact_max_items)"
    return (f"; dense candidates from a {b['dense_index_backend']} index built in {b['dense_index_build_s']:.1f}s, "
            f"recall@10 {b['dense_index_recall_at_10']}")


if __name__ == "__main__":
    main()
