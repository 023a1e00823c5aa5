"""Ranking quality of search systems on a query set, in one run: NDCG@10, P@10 and MRR@10 per query type.

Systems (all through :func:`recsys.search.hybrid.run_search` on the same catalogue, the served one):

- ``default``: the project's default (``search.mode``, ``search.fusion``, spelling and attribute boosts);
- ``lexical``: BM25 alone over the same item texts (the query as typed);
- ``dense``: the query's joint-space vector alone (the aligned text vector, or the raw text vector without
  an alignment), as typed;
- ``rrf``: reciprocal-rank fusion (k = ``search.rrf_k``) of the two, as typed.

NDCG uses linear gains (the grades) and the ideal ordering of all relevant items; P@10 counts relevant items
among the first 10; MRR@10 is 1 / the rank of the first relevant item (0 beyond 10). Relevant ids that are
not in the catalogue are left out of a query (a query left with none is skipped and counted).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from recsys.evaluation.query_sets import Query
from recsys.search.hybrid import SearchRequest, run_search
from recsys.search.settings import SearchConfig

log = logging.getLogger(__name__)

K = 10


@dataclass(frozen=True)
class System:
    name: str
    request: SearchRequest
    """Everything but the text and ``k``."""


def peer_systems() -> list[System]:
    """The default and its peers (see the module docstring)."""
    return [
        System("default", SearchRequest()),
        System("lexical", SearchRequest(mode="lexical", understand=False)),
        System("dense", SearchRequest(mode="semantic", understand=False)),
        System("rrf", SearchRequest(mode="hybrid", fusion="rrf", understand=False)),
    ]


def query_metrics(ranked: Sequence[str], relevant: dict[str, float], k: int = K) -> tuple[float, float, float]:
    """``(ndcg@k, p@k, mrr@k)`` of a ranked id list."""
    gains = np.array([relevant.get(i, 0.0) for i in ranked[:k]], dtype=np.float64)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.sort(np.fromiter(relevant.values(), np.float64))[::-1][:k]
    ndcg = float((gains * disc[: len(gains)]).sum() / (ideal * disc[: len(ideal)]).sum())
    hits = np.flatnonzero(gains > 0)
    return ndcg, float((gains > 0).sum() / k), float(1.0 / (hits[0] + 1)) if len(hits) else 0.0


@dataclass
class Evaluation:
    """``rows[(system, type)] = (ndcg, p, mrr, n_queries)``; type ``"all"`` pools every query."""

    rows: dict[tuple[str, str], tuple[float, float, float, int]]
    types: list[str]
    systems: list[str]
    skipped: int
    seconds: float

    def ndcg(self, system: str, qtype: str = "all") -> float:
        return self.rows[(system, qtype)][0]


def evaluate_queries(search: Any, queries: Sequence[Query], cfg: SearchConfig,
                     systems: Sequence[System] | None = None, cache_dir: Path | None = None) -> Evaluation:
    """Run every system on every query (text encodings are computed once per distinct text, in batches,
    cached under ``cache_dir`` when given)."""
    systems = list(systems or peer_systems())
    t0 = time.perf_counter()
    cat = search.catalogue
    known = set(cat.ids)
    prime_encodings(search, queries, cache_dir)
    per: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    skipped = 0
    with threadpool_limits(limits=1, user_api="blas"):  # one query at a time: BLAS threads only spin
        _run_all(search, queries, systems, cfg, known, per)
    skipped = sum(1 for q in queries if not any(i in known for i in q.relevant))
    types = sorted({t for _, t in per if t != "all"}) + ["all"]
    rows = {key: (*np.mean(np.asarray(v), axis=0).tolist(), len(v)) for key, v in per.items()}
    return Evaluation(rows, types, [s.name for s in systems], skipped, time.perf_counter() - t0)  # type: ignore[arg-type]


def _run_all(search: Any, queries: Sequence[Query], systems: Sequence[System], cfg: SearchConfig, known: set[str],
             per: dict[tuple[str, str], list[tuple[float, float, float]]]) -> None:
    cat = search.catalogue
    for q in queries:
        rel = {i: g for i, g in q.relevant.items() if i in known}
        if not rel:
            continue
        for s in systems:
            res = run_search(search, replace(s.request, text=q.text, k=K), cfg)
            m = query_metrics([cat.ids[r] for r in res.rows], rel)
            per.setdefault((s.name, q.type), []).append(m)
            per.setdefault((s.name, "all"), []).append(m)


def _memoise_text(search: Any) -> dict[str, np.ndarray] | None:
    """Cache the text encoder's answers on ``search`` (systems ask for the same texts again); returns the memo."""
    enc = search.encode_text
    if enc is None:
        return None
    if getattr(enc, "_memo", None) is not None:
        return enc._memo  # type: ignore[no-any-return]
    memo: dict[str, np.ndarray] = {}

    def encode(batch: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in batch if t not in memo))
        for start in range(0, len(missing), 64):
            chunk = missing[start : start + 64]
            for t, v in zip(chunk, enc(chunk)):
                memo[t] = np.asarray(v, np.float32)
        return np.stack([memo[t] for t in batch])

    encode._memo = memo  # type: ignore[attr-defined]
    search.encode_text = encode
    return memo


def prime_encodings(search: Any, queries: Sequence[Query], cache_dir: Path | None = None) -> None:
    """Encode every query text (as typed and spelling-corrected) in batches, once: read from and written to
    ``<cache_dir>/search-queries-<space>.npz`` when given (the vectors depend on the catalogue's space)."""
    memo = _memoise_text(search)
    if memo is None:
        return
    texts = [q.text for q in queries]
    if search.text_index is not None:
        texts += [p.corrected for p in (search.text_index.parser.parse(t) for t in texts) if p.corrections]
    texts = list(dict.fromkeys(texts))
    path = None
    if cache_dir is not None:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in search.catalogue.space)[:120]
        path = Path(cache_dir) / f"search-queries-{safe}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                memo.update(zip(z["texts"].tolist(), z["vectors"]))
    missing = [t for t in texts if t not in memo]
    if missing:
        search.encode_text(missing)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            keys = list(memo)
            np.savez(path, texts=np.array(keys), vectors=np.stack([memo[k] for k in keys]))
    log.info("query encodings: %d texts, %d encoded now", len(texts), len(missing))


def format_table(ev: Evaluation) -> str:
    """A markdown table: one row per query type, NDCG@10 / P@10 / MRR@10 per system; the best NDCG in bold."""
    head = "| query type | n | " + " | ".join(f"{s} NDCG / P / MRR" for s in ev.systems) + " |"
    lines = [head, "|" + "---|" * (len(ev.systems) + 2)]
    for t in ev.types:
        best = max(ev.rows[(s, t)][0] for s in ev.systems)
        cells = []
        for s in ev.systems:
            nd, p, mrr, _ = ev.rows[(s, t)]
            txt = f"{nd:.3f} / {p:.3f} / {mrr:.3f}"
            cells.append(f"**{txt}**" if nd == best else txt)
        lines.append(f"| {t} | {ev.rows[(ev.systems[0], t)][3]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_json(ev: Evaluation) -> dict[str, Any]:
    return {
        "k": K, "skipped_queries": ev.skipped, "seconds": round(ev.seconds, 2),
        "results": {s: {t: dict(zip(("ndcg", "precision", "mrr", "n"), ev.rows[(s, t)])) for t in ev.types}
                    for s in ev.systems},
    }


TUNE_GRID: dict[str, tuple[float, ...]] = {
    "lexical_weight": (0.5, 1.0, 2.0, 4.0),
    "attribute_weight": (0.5, 1.0, 2.0, 4.0),
}
"""The dense weight stays 1: a linear fusion ranks alike under any common scale of its weights."""


def tune(search: Any, queries: Sequence[Query], cfg: SearchConfig, grid: dict[str, tuple[float, ...]] | None = None,
         cache_dir: Path | None = None) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Grid search of the default system's settings on ``queries`` (validation queries, never the reported
    ones): the setting with the best mean over query types of NDCG@10 (ties: the first in grid order), and
    every setting's figures."""
    import itertools

    grid = grid or TUNE_GRID
    keys = list(grid)
    table = []
    best: tuple[float, dict[str, float]] | None = None
    prime_encodings(search, queries, cache_dir)
    for values in itertools.product(*(grid[k] for k in keys)):
        setting = dict(zip(keys, values))
        ev = evaluate_queries(search, queries, cfg.model_copy(update=setting), [System("default", SearchRequest())])
        per_type = [ev.ndcg("default", t) for t in ev.types if t != "all"]
        score = float(np.mean(per_type))
        table.append({**setting, "mean_type_ndcg": round(score, 4), "min_type_ndcg": round(min(per_type), 4)})
        if best is None or score > best[0] + 1e-9:
            best = (score, setting)
    assert best is not None
    return best[1], table
