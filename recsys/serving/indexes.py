"""Index find-or-build and publishing for the serving state, and the similar-items vector space.

An index the service needs (the similar-items index, the large-catalogue feed's index over item factors, product
search's index over the joint-space vectors of a large catalogue)
is loaded from the registry's active published version when it was built from the same vectors; brought
up to date through its side buffer when few rows differ; else built, published atomically under
``<artifacts>/index-<name>`` and marked active (kind ``index-<name>``), so other workers and restarts load
it instead of building it again.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine

from recsys.config import Config
from recsys.errors import ArtifactError
from recsys.serving.state import SEARCH_INDEX, USER_ITEMS_INDEX
from recsys.store.artifacts import active_artifact

log = logging.getLogger(__name__)


def fingerprint(vectors: np.ndarray) -> str:
    """What a published index records of the vectors it was built from (reused when they match)."""
    return hashlib.sha1(np.ascontiguousarray(vectors).tobytes()).hexdigest()[:16]


def similar_fingerprint(config: Config, vectors: np.ndarray) -> str:
    """The similar-items index's fingerprint: the vectors and the neighbour table's width."""
    return f"{fingerprint(vectors)}-t{config.service.similar_table_k}"


def similar_vectors(config: Config, content: np.ndarray, factors: np.ndarray | None) -> np.ndarray:
    """Item->item space: content blended with normalised CF factors (co-interaction similarity), with the
    shares ``service.similar_content_weight`` / ``service.similar_cf_weight`` of the cosine.

    Args:
        content: ``(n, d)`` L2-normalised; factors: ``(n, k)`` or ``None``. Returns ``(n, d [+ k])`` float32,
        L2-normalised rows.
    """
    svc = config.service
    w_content = svc.similar_content_weight
    w_cf = svc.similar_cf_weight if factors is not None else 0.0
    total = w_content + w_cf
    parts = [content * np.float32(np.sqrt(w_content / total))]
    if factors is not None and w_cf > 0:
        norm = np.linalg.norm(factors, axis=1, keepdims=True)
        unit = np.where(norm > 0, factors / np.maximum(norm, 1e-12), 0).astype(np.float32)
        parts.append(unit * np.float32(np.sqrt(w_cf / total)))
    v = np.hstack(parts).astype(np.float32)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return v


def shared_vectors(vectors: np.ndarray, index: Any) -> np.ndarray:
    """``vectors``, or the same numbers as ``index``'s base rows when it has no side buffer.

    A published index loaded from disk has its base memory-mapped, so the processes serving it share those
    pages (page cache) instead of each holding an ``(n, d)`` copy of the vectors it was built from. The two are
    compared in full (a fraction of a second at a million rows); any difference keeps ``vectors``.
    """
    base_of = getattr(index, "base_vectors", None)
    if base_of is None or index.buffer_size != 0:
        return vectors
    base = base_of()
    if base is vectors or base.shape != vectors.shape or base.dtype != vectors.dtype or not np.array_equal(base, vectors):
        return vectors
    return base


def with_rows(index: Any, vectors: np.ndarray, rows: np.ndarray, n_old: int) -> Any:
    """A copy of ``index`` (sharing its base) with ``vectors[rows]`` replaced (rows < ``n_old``) or appended
    (the rows from ``n_old`` on, in order) through its side buffer; ``None`` in, ``None`` out."""
    if index is None:
        return None
    if index.size != n_old:
        raise ValueError(f"the index holds {index.size} rows, the state {n_old}")
    out = index.copy()
    old = np.sort(rows[rows < n_old])
    if len(old):
        out.update(old, vectors[old])
    if len(vectors) > n_old:
        out.add(vectors[n_old:])
    return out


def user_items_index(config: Config, engine: Engine, model: Any) -> Callable[[np.ndarray, np.ndarray | None], Any]:
    """The candidate regime's index builder over unit item factors: the published one (built when missing)."""
    return lambda f, queries: published_index(
        config, engine, USER_ITEMS_INDEX, f, f"{model.version}-{fingerprint(f)}", queries)[0]


def search_index(config: Config, engine: Engine, vectors: np.ndarray, *, force: bool = False) -> tuple[Any, str | None]:
    """Product search's dense index over the search catalogue's ``(n, d)`` vectors: the published one (built
    when missing), or ``(None, None)`` when ``n <= search.exact_max_items`` (an exact scan is fast enough)."""
    if len(vectors) <= config.search.exact_max_items:
        return None, None
    return published_index(config, engine, SEARCH_INDEX, vectors, fingerprint(vectors), force=force)


def published_index(config: Config, engine: Engine, name: str, vectors: np.ndarray, fingerprint: str,
                    queries: np.ndarray | None = None, *, force: bool = False, table: int = 0) -> tuple[Any, str]:
    """The active published index ``name`` when it was built from these vectors; the active one with
    the rows that differ in its side buffer when few do (not published: the buffer is the catalogue's
    change since that version); else a new one.

    A new index is built, then published atomically under ``<artifacts>/index-<name>`` and marked
    active in the registry (kind ``index-<name>``), so other workers and restarts load it instead of
    building it again; the whole step runs under a file lock, so workers starting together build once.
    A failed publish is logged and the in-memory index is served anyway.
    ``force``: always build and publish (a failed publish raises). ``table``: a new index gets a
    :class:`~recsys.index.neighbours.NeighbourTable` of this width, saved with it (0: none); the
    fingerprint should say the width, so that a changed width builds anew.
    """
    from recsys.index.publish import root_lock

    root = config.artifacts_path / f"index-{name}"
    with root_lock(root, ".build.lock"):  # workers starting together: one builds, the others load it
        return _find_or_build_index(config, engine, name, root, vectors, fingerprint, queries, force=force, table=table)


def _active_index_version(engine: Engine, name: str, root: Path) -> str | None:
    """The registry's active version of ``index-<name>`` when its directory is complete, else ``CURRENT``."""
    from recsys.index.manifest import MANIFEST
    from recsys.index.publish import active_version

    rec = active_artifact(engine, f"index-{name}")
    if rec is not None and (root / rec.version / MANIFEST).is_file():
        return rec.version
    return active_version(root)


def _find_or_build_index(config: Config, engine: Engine, name: str, root: Path, vectors: np.ndarray,
                         fingerprint: str, queries: np.ndarray | None, *, force: bool, table: int) -> tuple[Any, str]:
    from recsys.index.factory import build_index, load_retriever
    from recsys.index.manifest import read_manifest
    from recsys.index.publish import prune, publish

    retriever = None
    try:
        current = None if force else _active_index_version(engine, name, root)
        if current is not None:
            info = read_manifest(root / current).get("info") or {}
            if info.get("fingerprint") == fingerprint and info.get("n", len(vectors)) == len(vectors):
                retriever = load_retriever(root / current)
                if retriever.size == len(vectors):
                    return retriever, current
            retriever = _derived_index(config, root, current, info, vectors, table)
            if retriever is not None:  # the active version plus a side buffer: served, not published
                return retriever, current
    except (ArtifactError, OSError, ValueError) as exc:
        log.warning("index %s: cannot use the published version (%s); building a new one", name, exc)
        retriever = None
    retriever = build_index(vectors, config.index, queries=queries)
    if table > 0:
        from recsys.index.neighbours import build_neighbours

        t0 = time.perf_counter()
        retriever.neighbours = build_neighbours(retriever, table, vectors=vectors)
        retriever.info["neighbours"] = {"width": table, "build_seconds": round(time.perf_counter() - t0, 3)}
    retriever.info["fingerprint"] = fingerprint
    retriever.info["n"] = len(vectors)
    try:
        version = publish(retriever, root, engine=engine, kind=f"index-{name}")
        prune(root, keep=3)
    except Exception as exc:  # noqa: BLE001 - serving goes on with the in-memory index
        if force:
            raise
        log.warning("index %s: could not publish (%s); serving an unpublished in-memory index", name, exc)
        version = f"unpublished-{fingerprint[:10]}"
    return retriever, version


def _derived_index(config: Config, root: Path, current: str, info: dict[str, Any], vectors: np.ndarray,
                   table: int) -> Any:
    """The active index of ``root`` brought to ``vectors`` through its side buffer (items added or
    changed since its build, at most ``index.max_buffered`` rows and ``index.max_buffered_fraction`` of
    them), or ``None``: rebuild."""
    from recsys.index.factory import load_retriever

    cfg = config.index
    limit = min(cfg.max_buffered, int(cfg.max_buffered_fraction * len(vectors)))
    if limit <= 0 or (info.get("neighbours") or {}).get("width", 0) != table:
        return None
    retriever = load_retriever(root / current)
    t0 = time.perf_counter()
    if not retriever.apply_rows(vectors, max_buffered=limit):
        return None
    retriever.info["derived_from"] = current
    log.info("index %s: %s brought up to date through its side buffer (%d rows buffered) in %.2fs",
             root.name, current, retriever.buffer_size, time.perf_counter() - t0)
    return retriever
