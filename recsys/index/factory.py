"""``build_index``: pick the backend, build, and measure recall against exact search."""

from __future__ import annotations

import datetime as dt
import logging
import time
from pathlib import Path

import numpy as np

from recsys.errors import ArtifactError, ConfigError
from recsys.index.base import Retriever, as_matrix
from recsys.index.exact import ExactRetriever
from recsys.index.manifest import read_manifest
from recsys.index.settings import IndexConfig

log = logging.getLogger(__name__)


def scann_available() -> bool:
    """Whether ``import scann`` works here."""
    try:
        import scann  # noqa: F401
    except ImportError:
        return False
    return True


def build_index(vectors: np.ndarray, cfg: IndexConfig | None = None, *, queries: np.ndarray | None = None) -> Retriever:
    """Build a retriever over ``vectors`` and measure its recall@``cfg.recall_k`` against exact search.

    Args:
        vectors: ``(n, dim)`` float32, L2-normalised (row ``i`` gets id ``i``).
        cfg: the ``index`` config section; ``backend`` ``auto`` uses ScaNN when importable and exact
            search (with a logged warning) otherwise; an empty matrix always gets the exact backend.
        queries: ``(m, dim)`` typical queries (e.g. user vectors for a user-to-item index) to measure
            recall on. ``None``: a sample of the indexed rows, each excluding itself (the
            similar-items case).

    Returns:
        The retriever; ``retriever.info`` holds ``recall_at_k``, ``recall`` (how it was measured),
        ``build_seconds``, ``created`` and ``params``, which :meth:`save` writes to the manifest.

    Raises:
        ConfigError: ``backend`` is ``scann`` but scann cannot be imported.
    """
    cfg = cfg or IndexConfig()
    vecs = as_matrix(vectors)
    t0 = time.perf_counter()
    backend = cfg.backend
    if backend == "auto":
        backend = "scann" if scann_available() else "exact"
        if backend == "exact":
            log.warning("scann is not importable; falling back to exact brute-force search (slow on large catalogues)")
    elif backend == "scann" and not scann_available():
        raise ConfigError("index.backend is 'scann' but scann cannot be imported; install it or use 'auto' / 'exact'")
    retriever: Retriever
    if backend == "scann" and len(vecs) > 0:
        from recsys.index.scann import ScannRetriever

        retriever = ScannRetriever.build(vecs, cfg)
    else:
        retriever = ExactRetriever(vecs, cfg)
    retriever.info["build_seconds"] = round(time.perf_counter() - t0, 3)
    retriever.info["created"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if retriever.backend == "exact":
        retriever.info["recall_at_k"] = 1.0
        retriever.info["recall"] = {"k": cfg.recall_k, "method": "exact search (no approximation)"}
    else:
        t1 = time.perf_counter()
        recall = measure_recall(
            retriever, vecs, k=cfg.recall_k, sample=cfg.recall_sample, seed=cfg.seed, queries=queries
        )
        retriever.info["recall_at_k"] = round(recall, 4)
        retriever.info["recall"] = {
            "k": cfg.recall_k,
            "queries": int(min(cfg.recall_sample, len(vecs) if queries is None else len(queries))),
            "seed": cfg.seed,
            "source": "indexed rows, self excluded" if queries is None else "given queries",
            "seconds": round(time.perf_counter() - t1, 3),
        }
        log.info("index recall@%d vs exact: %.4f", cfg.recall_k, recall)
        if recall < cfg.recall_warn_below:
            log.warning(
                "index recall@%d vs exact is only %.3f (params %s); raise index.leaves_to_search or "
                "index.reorder, or use index.mode 'brute_force'",
                cfg.recall_k, recall, retriever.info.get("params"),
            )
    return retriever


def measure_recall(
    retriever: Retriever,
    vectors: np.ndarray,
    *,
    k: int = 10,
    sample: int = 200,
    seed: int = 0,
    queries: np.ndarray | None = None,
) -> float:
    """Mean recall@``k`` of ``retriever`` against exact search over the same ``(n, dim)`` vectors.

    Queries: ``sample`` rows of ``queries`` if given, else ``sample`` indexed rows, each excluding
    itself from both result lists. Sampling is seeded. Returns 1.0 when there is nothing to find.
    """
    vecs = as_matrix(vectors, retriever.dim)
    oracle = ExactRetriever(vecs)
    rng = np.random.default_rng(seed)
    if queries is None:
        rows = rng.choice(len(vecs), size=min(sample, len(vecs)), replace=False) if len(vecs) else np.empty(0, int)
        q = vecs[rows]
        exclude: list[list[int]] | None = [[int(r)] for r in rows]
    else:
        qs = as_matrix(queries, retriever.dim, "queries")
        q = qs[rng.choice(len(qs), size=min(sample, len(qs)), replace=False)]
        exclude = None
    if len(q) == 0:
        return 1.0
    true_ids, _ = oracle.search(q, k, exclude=exclude)
    got_ids, _ = retriever.search(q, k, exclude=exclude)
    hits = total = 0
    for t, g in zip(true_ids, got_ids, strict=True):
        t = t[t >= 0]
        hits += len(np.intersect1d(t, g[g >= 0]))
        total += len(t)
    return hits / total if total else 1.0


def load_retriever(directory: str | Path, *, mmap: bool = True, cfg: IndexConfig | None = None) -> Retriever:
    """Load a saved retriever of either backend (dispatch on the manifest's ``backend``).

    ``cfg``: query-time settings to use instead of the manifest's config (``filter_*``,
    ``reorder_per_result``, ``max_reorder``, ``exact_chunk_elements``, ``search_threads``,
    ``buffer_warn``); what the index was built with (``params``) always comes from the manifest.

    Raises:
        ArtifactError: incomplete or unknown artifact; a ScaNN index when scann is not importable.
    """
    backend = read_manifest(directory).get("backend")
    if backend == "exact":
        return ExactRetriever.load(directory, mmap=mmap, cfg=cfg)
    if backend == "scann":
        from recsys.index.scann import ScannRetriever

        return ScannRetriever.load(directory, mmap=mmap, cfg=cfg)
    raise ArtifactError(f"{directory}: unknown index backend {backend!r}; allowed: 'exact', 'scann'")
