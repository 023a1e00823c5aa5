"""Exact maximum inner product search with numpy (the oracle, and the fallback backend)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from recsys.index.base import BaseRetriever, SideBuffer, as_matrix
from recsys.index.filters import NEG_INF, RowFilter, top_k
from recsys.index.manifest import config_of, load_buffer, read_manifest, write_artifact_files, write_manifest
from recsys.index.neighbours import load_neighbours
from recsys.index.settings import IndexConfig

log = logging.getLogger(__name__)

VECTORS_FILE = "vectors.npy"


class ExactRetriever(BaseRetriever):
    """Brute force: one float32 matmul per chunk of queries, then ``argpartition``.

    Args:
        vectors: ``(n, dim)`` float32 (a memory map is fine; it is not copied when already float32).
        cfg: the ``index`` config section (``exact_chunk_elements``, ``buffer_warn``).
        buffer: a side buffer restored by :meth:`load`.
    """

    backend = "exact"

    def __init__(self, vectors: np.ndarray, cfg: IndexConfig | None = None, buffer: SideBuffer | None = None) -> None:
        cfg = cfg or IndexConfig()
        if isinstance(vectors, np.memmap):  # loaded artifact: trusted, not scanned for NaN
            self._vectors: np.ndarray = np.asarray(vectors)
        else:
            self._vectors = as_matrix(vectors)
        if self._vectors.ndim != 2:
            raise ValueError(f"vectors must be (n, dim), got shape {self._vectors.shape}")
        super().__init__(self._vectors.shape[1], self._vectors.shape[0], buffer, cfg.buffer_warn)
        self.cfg = cfg
        self.info = {"backend": self.backend, "params": {}, "recall_at_k": 1.0, "recall_k": cfg.recall_k}

    def _base_vectors(self) -> np.ndarray:
        return self._vectors

    def _search_base(
        self, queries: np.ndarray, k: int, filt: RowFilter, hidden: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        n_base = self.n_base
        chunk = max(1, self.cfg.exact_chunk_elements // max(n_base, 1))
        shared_off = None
        if filt.allow is not None and filt.allow.ndim == 1:
            shared_off = np.flatnonzero(~filt.allow[:n_base])
        ids_out = np.empty((len(queries), k), dtype=np.int64)
        scores_out = np.empty((len(queries), k), dtype=np.float32)
        for start in range(0, len(queries), chunk):
            stop = min(start + chunk, len(queries))
            if stop - start == 1:  # matrix-vector product: much faster than a (1, dim) matmul in OpenBLAS
                scores = (self._vectors @ queries[start])[None, :]
            else:
                scores = queries[start:stop] @ self._vectors.T  # (chunk, n_base)
            if shared_off is not None and shared_off.size:
                scores[:, shared_off] = NEG_INF
            if hidden.size:
                scores[:, hidden] = NEG_INF
            if not filt.empty:
                for j, i in enumerate(range(start, stop)):
                    if filt.allow is not None and filt.allow.ndim == 2:
                        scores[j, ~filt.allow[i, :n_base]] = NEG_INF
                    excl = filt.exclude_row(i)
                    if excl.size:
                        scores[j, excl[excl < n_base]] = NEG_INF
            ids_out[start:stop], scores_out[start:stop] = top_k(scores, k)
        return ids_out, scores_out

    # -- persistence
    def save(self, directory: str | Path) -> None:
        """Write ``vectors.npy``, the side buffer and ``manifest.json`` (last) into ``directory``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / VECTORS_FILE, np.asarray(self._vectors, dtype=np.float32))
        write_artifact_files(out, self._buffer, self.neighbours)
        write_manifest(out, self)

    @classmethod
    def load(cls, directory: str | Path, *, mmap: bool = True, cfg: IndexConfig | None = None) -> ExactRetriever:
        """Load what :meth:`save` wrote; ``mmap`` maps the vectors instead of reading them."""
        src = Path(directory)
        manifest = read_manifest(src, expect_backend=cls.backend)
        cfg = cfg or config_of(manifest)
        vectors = np.load(src / VECTORS_FILE, mmap_mode="r" if mmap else None)
        retriever = cls(vectors, cfg, load_buffer(src, vectors.shape[1]))
        retriever.info = dict(manifest.get("info", retriever.info))
        retriever.neighbours = load_neighbours(src, mmap=mmap)
        return retriever


def search_rows(
    vectors: np.ndarray,
    query: np.ndarray,
    k: int,
    allow: np.ndarray | None = None,
    blocked: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top ``k`` of one ``(dim,)`` query among the rows of ``(n, dim)`` ``vectors``.

    Args:
        allow: ``(n,)`` bool, rows that may be returned (``None``: all). A selective mask gathers
            the allowed rows; a broad one scores every row and masks.
        blocked: ``(b,)`` int64 rows never returned.

    Returns:
        ``(ids (m,) int64, scores (m,) float32)`` descending, ``m = min(k, rows allowed)``.
    """
    n = len(vectors)
    if allow is not None and np.count_nonzero(allow) * 4 < n:
        rows = np.flatnonzero(allow)
        if blocked is not None and blocked.size:
            rows = rows[~np.isin(rows, blocked)]
        if rows.size == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        pos, top = top_k((np.asarray(vectors[rows]) @ query)[None, :], min(k, rows.size))
        return rows[pos[0]], top[0]
    scores = np.asarray(vectors @ query, dtype=np.float32)
    if allow is not None:
        scores[~allow] = NEG_INF
    if blocked is not None and blocked.size:
        scores[blocked] = NEG_INF
    ids, top = top_k(scores[None, :], min(k, n))
    valid = ids[0] >= 0
    return ids[0][valid], top[0][valid]
