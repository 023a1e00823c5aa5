"""ScaNN retriever (``scann`` is imported only when a ScaNN index is built or loaded).

Parameters come from the catalogue size (:func:`choose_params`), each overridable in
:class:`~recsys.index.settings.IndexConfig`. Filtered queries over-fetch from ScaNN and drop the rows
that are not allowed; when fewer than ``k`` survive, or the mask is so selective that over-fetching
would cost more than scanning, the query is answered exactly over the allowed rows instead, so a
filter never returns fewer results than exist.
"""

from __future__ import annotations

import logging
import math
import os
import time
import weakref
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys.errors import ArtifactError
from recsys.index.base import BaseRetriever, SideBuffer, as_matrix
from recsys.index.exact import VECTORS_FILE, search_rows
from recsys.index.filters import NEG_INF, RowFilter
from recsys.index.manifest import config_of, load_buffer, read_manifest, write_artifact_files, write_manifest
from recsys.index.neighbours import load_neighbours
from recsys.index.settings import IndexConfig

log = logging.getLogger(__name__)

SCANN_DIR = "scann"
MIN_AH_ROWS = 256
"""Below this many rows AH codebooks (16 or 256 centres per block) cannot be trained: brute force."""
DEEP_LEAVES = 4

_SEARCHERS: weakref.WeakSet[Any] = weakref.WeakSet()
"""The ScaNN searchers of this process (see :func:`_keep_inherited_searchers`)."""


def _keep_inherited_searchers() -> None:
    """In a child after ``fork``: make sure no searcher the parent made is ever destroyed here.

    A ScaNN searcher holds a thread pool; its destructor joins the pool's threads, which do not exist in a
    forked child, and aborts the process (``std::system_error: Invalid argument``; seen when a gunicorn
    worker forked from the preloaded master reloaded and dropped its first state, and again at its exit).
    So each inherited searcher gets one reference that is never released: it outlives the interpreter's
    own teardown. Its pages are shared with the parent, which keeps it anyway. Searching with it is safe:
    single queries and ``search_batched`` run on the calling thread.
    """
    import ctypes

    for searcher in list(_SEARCHERS):
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(searcher))


os.register_at_fork(after_in_child=_keep_inherited_searchers)


@dataclass(frozen=True)
class ScannParams:
    """What a ScaNN searcher was built with (``None``: not used by the mode)."""

    mode: str
    """``brute_force``, ``ah`` (asymmetric hashing + reordering) or ``tree_ah`` (partitioning too)."""
    num_leaves: int | None = None
    leaves_to_search: int | None = None
    reorder: int | None = None
    dims_per_block: int | None = None
    anisotropic_threshold: float | None = None
    hash_type: str | None = None
    training_sample: int | None = None
    spherical: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def choose_params(n: int, dim: int, cfg: IndexConfig) -> ScannParams:
    """ScaNN parameters for ``n`` rows of dimension ``dim`` (pure; see the ``index`` config)."""
    mode = cfg.mode
    if mode == "auto":
        mode = "brute_force" if n < cfg.brute_force_below else "ah" if n < cfg.partition_above else "tree_ah"
    if mode != "brute_force" and n < MIN_AH_ROWS:
        log.info("%d rows are too few for asymmetric hashing; using ScaNN brute force", n)
        mode = "brute_force"
    if mode == "brute_force":
        return ScannParams(mode)
    common: dict[str, Any] = {
        "reorder": cfg.reorder,
        "dims_per_block": cfg.dims_per_block,
        "anisotropic_threshold": cfg.anisotropic_threshold,
        "hash_type": cfg.hash_type,
        "training_sample": min(n, cfg.training_sample),
    }
    if mode == "ah":
        return ScannParams(mode, **common)
    leaves = cfg.num_leaves or max(2, min(round(math.sqrt(n)), n // 20))
    to_search = cfg.leaves_to_search or max(cfg.min_leaves_to_search, round(cfg.leaves_fraction * leaves))
    return ScannParams(mode, leaves, min(to_search, leaves), spherical=cfg.spherical, **common)


def _import_scann() -> Any:
    try:
        import scann
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"the scann package cannot be imported ({exc}); install it (pip install scann) or set "
            "index.backend to 'exact'"
        ) from exc
    return scann


def _build_searcher(vectors: np.ndarray, params: ScannParams, cfg: IndexConfig) -> Any:
    scann = _import_scann()
    builder = scann.scann_ops_pybind.builder(vectors, 10, "dot_product")
    if params.mode == "tree_ah":
        builder = builder.tree(
            num_leaves=params.num_leaves,
            num_leaves_to_search=params.leaves_to_search,
            training_sample_size=params.training_sample,
            spherical=bool(params.spherical),
        )
    if params.mode == "brute_force":
        builder = builder.score_brute_force()
    else:
        builder = builder.score_ah(
            params.dims_per_block,
            anisotropic_quantization_threshold=params.anisotropic_threshold,
            training_sample_size=params.training_sample,
            hash_type=params.hash_type,
        ).reorder(params.reorder)
    return builder.set_n_training_threads(cfg.training_threads).build()


class ScannRetriever(BaseRetriever):
    """ScaNN over ``(n, dim)`` float32 vectors, plus the exact side buffer of :mod:`recsys.index.base`.

    Keeps the vectors (a memory map once loaded) for exact fallbacks. Build with :meth:`build`.

    Attributes:
        params: the :class:`ScannParams` used.
        stats: how queries were answered: ``scann``, ``filtered``, ``exact_fallback``.
    """

    backend = "scann"

    def __init__(
        self,
        searcher: Any,
        vectors: np.ndarray,
        params: ScannParams,
        cfg: IndexConfig,
        buffer: SideBuffer | None = None,
    ) -> None:
        super().__init__(vectors.shape[1], vectors.shape[0], buffer, cfg.buffer_warn)
        self._searcher = searcher
        _SEARCHERS.add(searcher)
        self._vectors = vectors
        self.params = params
        self.cfg = cfg
        self.stats: Counter[str] = Counter()
        self._batch_threads = cfg.search_threads
        if cfg.search_threads > 1:
            searcher.set_num_threads(cfg.search_threads)
        self.info = {"backend": self.backend, "params": params.as_dict(), "recall_k": cfg.recall_k}

    @classmethod
    def build(cls, vectors: np.ndarray, cfg: IndexConfig | None = None) -> ScannRetriever:
        """Build a ScaNN index over ``(n, dim)`` vectors (n >= 1) with parameters from :func:`choose_params`."""
        cfg = cfg or IndexConfig()
        vecs = as_matrix(vectors)
        if len(vecs) == 0:
            raise ValueError("cannot build a ScaNN index over 0 vectors; use the exact backend")
        params = choose_params(len(vecs), vecs.shape[1], cfg)
        t0 = time.perf_counter()
        searcher = _build_searcher(vecs, params, cfg)
        retriever = cls(searcher, vecs, params, cfg)
        retriever.info["build_seconds"] = round(time.perf_counter() - t0, 3)
        log.info("built ScaNN %s over %d x %d in %.1fs", params.as_dict(), *vecs.shape, time.perf_counter() - t0)
        return retriever

    def _base_vectors(self) -> np.ndarray:
        return self._vectors

    @contextmanager
    def batch_threads(self, threads: int = 0) -> Iterator[None]:
        """Within the block, batched searches run on ``threads`` threads (0: all cores), e.g. to build a
        neighbour table; afterwards the configured ``search_threads`` apply again. Not for serving threads."""
        n = threads or os.cpu_count() or 1
        before = self._batch_threads
        self._searcher.set_num_threads(n)
        self._batch_threads = n
        try:
            yield
        finally:
            self._batch_threads = before
            self._searcher.set_num_threads(max(before, 1))

    # -- search
    def _scann(self, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw ScaNN top ``fetch`` for ``(n, dim)`` queries: ``(n, fetch)`` ids (-1 pads) and scores."""
        p = self.params
        pre = -1
        if p.reorder is not None:
            wide = min(math.ceil(self.cfg.reorder_per_result * fetch), self.cfg.max_reorder)
            pre = min(max(p.reorder, wide, fetch), self.n_base)
        leaves = -1
        if p.leaves_to_search is not None and p.num_leaves is not None:
            # Deep fetches (big k, filters) need the leaves holding ranks far down the list too:
            # add DEEP_LEAVES leaves per leaf-size worth of rows fetched (~0 extra for k=10 at 1M rows).
            per_leaf = self.n_base / p.num_leaves
            leaves = min(p.num_leaves, p.leaves_to_search + math.ceil(DEEP_LEAVES * fetch / per_leaf) - 1)
        if len(queries) == 1:
            ids, scores = self._searcher.search(queries[0], fetch, pre, leaves)
            ids, scores = ids[None, :], scores[None, :]
        elif self._batch_threads > 1:
            ids, scores = self._searcher.search_batched_parallel(queries, fetch, pre, leaves)
        else:
            ids, scores = self._searcher.search_batched(queries, fetch, pre, leaves)
        ids = np.array(ids, dtype=np.int64)
        scores = np.array(scores, dtype=np.float32)
        if ids.shape[1] < fetch:
            pad = fetch - ids.shape[1]
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=np.nan)
        bad = ~np.isfinite(scores)
        ids[bad] = -1
        scores[bad] = NEG_INF
        return ids, scores

    def _search_base(
        self, queries: np.ndarray, k: int, filt: RowFilter, hidden: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        n = len(queries)
        if filt.empty and hidden.size == 0:
            self.stats["scann"] += n
            ids, scores = self._scann(queries, k)
            for short in np.flatnonzero((ids < 0).any(axis=1)):  # ScaNN found fewer than k: answer exactly
                self.stats["exact_fallback"] += 1
                ids[short], scores[short] = _pad(*search_rows(self._vectors, queries[short], k), k)
            return ids, scores
        shared_count = None
        if filt.allow is not None and filt.allow.ndim == 1:
            shared_count = int(np.count_nonzero(filt.allow[: self.n_base]))
        ids_out = np.full((n, k), -1, dtype=np.int64)
        scores_out = np.full((n, k), NEG_INF, dtype=np.float32)
        for i in range(n):
            ids_out[i], scores_out[i] = _pad(*self._search_filtered(queries[i], k, filt, i, hidden, shared_count), k)
        return ids_out, scores_out

    def _search_filtered(
        self, query: np.ndarray, k: int, filt: RowFilter, i: int, hidden: np.ndarray, shared_count: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        n_base = self.n_base
        allow = filt.allow_row(i)
        base_allow = None if allow is None else allow[:n_base]
        excl = filt.exclude_row(i)
        blocked = np.union1d(excl[excl < n_base], hidden)
        if base_allow is None:
            n_allowed = n_base - blocked.size
        else:
            count = shared_count if shared_count is not None else int(np.count_nonzero(base_allow))
            n_allowed = count - int(np.count_nonzero(base_allow[blocked]))
        if n_allowed <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        fetch = k + blocked.size
        if base_allow is not None:
            fetch = max(fetch, math.ceil(k * n_base / n_allowed * self.cfg.filter_overfetch))
        fetch = min(fetch, n_base)
        small = n_allowed <= k or (base_allow is not None and n_allowed <= self.cfg.filter_exact_below)
        if not small and fetch <= self.cfg.filter_max_fetch:
            ids, scores = self._scann(query[None, :], fetch)
            ids, scores = ids[0], scores[0]
            keep = ids >= 0
            if base_allow is not None:
                keep &= base_allow[np.maximum(ids, 0)]
            if blocked.size:
                keep &= ~np.isin(ids, blocked)
            if np.count_nonzero(keep) >= k:
                self.stats["filtered"] += 1
                return ids[keep][:k], scores[keep][:k]
        self.stats["exact_fallback"] += 1
        return search_rows(self._vectors, query, k, base_allow, blocked)

    # -- persistence
    def save(self, directory: str | Path) -> None:
        """Write ScaNN's assets (``scann/``, relative paths), ``vectors.npy``, the buffer, then the manifest."""
        out = Path(directory)
        (out / SCANN_DIR).mkdir(parents=True, exist_ok=True)
        self._searcher.serialize(str(out / SCANN_DIR), relative_path=True)
        np.save(out / VECTORS_FILE, np.asarray(self._vectors, dtype=np.float32))
        write_artifact_files(out, self._buffer, self.neighbours)
        write_manifest(out, self)

    @classmethod
    def load(cls, directory: str | Path, *, mmap: bool = True, cfg: IndexConfig | None = None) -> ScannRetriever:
        """Load what :meth:`save` wrote; ``mmap`` maps ``vectors.npy`` (used only for exact fallbacks)."""
        src = Path(directory)
        manifest = read_manifest(src, expect_backend=cls.backend)
        cfg = cfg or config_of(manifest)
        try:
            scann = _import_scann()
        except ImportError as exc:
            raise ArtifactError(f"{src} is a ScaNN index but {exc}") from exc
        try:
            searcher = scann.scann_ops_pybind.load_searcher(str(src / SCANN_DIR))
        except (ValueError, RuntimeError, OSError) as exc:
            raise ArtifactError(f"cannot load the ScaNN searcher in {src / SCANN_DIR}: {exc}") from exc
        vectors = np.asarray(np.load(src / VECTORS_FILE, mmap_mode="r" if mmap else None))
        params = ScannParams(**manifest["params"])
        retriever = cls(searcher, vectors, params, cfg, load_buffer(src, vectors.shape[1]))
        retriever.info = dict(manifest.get("info", retriever.info))
        retriever.neighbours = load_neighbours(src, mmap=mmap)
        return retriever


def _pad(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    if len(ids) >= k:
        return ids[:k], scores[:k]
    return (
        np.concatenate([ids, np.full(k - len(ids), -1, dtype=np.int64)]),
        np.concatenate([scores, np.full(k - len(ids), NEG_INF, dtype=np.float32)]),
    )
