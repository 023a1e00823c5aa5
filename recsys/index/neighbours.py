"""Precomputed nearest neighbours of every indexed row (the similar-items widget's table).

An item page asks the same question for the same item over and over: "the top ``k`` rows nearest to
row ``r``, without ``r``". :func:`build_neighbours` answers it once for every row with the index itself
(batched searches, all cores) and keeps the first ``width`` answers per row, so a request is a row
lookup instead of an index search. The table is saved in the index's version directory
(``neighbours_ids.npy`` int32, ``neighbours_scores.npy`` float32) and memory-mapped on load, so the
serving processes on one machine share one copy in the page cache.

:meth:`NeighbourTable.lookup` answers from the table whenever the answer is provably the one a live
search would give from the same ranked list: the wanted ``k`` survivors of the filters (allow mask,
excluded rows) are among the stored ``width``, or the row's list is complete (a catalogue smaller than
``width + 1``). Otherwise it returns ``None`` and the caller searches the index.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

IDS_FILE = "neighbours_ids.npy"
SCORES_FILE = "neighbours_scores.npy"


@dataclass(frozen=True)
class NeighbourTable:
    """``ids[r]``: the ``width`` rows nearest to row ``r`` (``r`` itself left out), best first, ``-1`` pads
    where the index holds fewer rows; ``scores[r]``: their inner products with row ``r``."""

    ids: np.ndarray  # (n, width) int32
    scores: np.ndarray  # (n, width) float32

    @property
    def width(self) -> int:
        return int(self.ids.shape[1])

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def lookup(self, row: int, k: int, *, allow: np.ndarray | None = None,
               exclude: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray] | None:
        """The top ``k`` neighbours of ``row`` that ``allow`` keeps and that are not in ``exclude``, or
        ``None`` when the stored list cannot tell (fewer than ``k`` survivors in a truncated list).

        Returns:
            ``(ids (m,) int64, scores (m,) float32)``, ``m <= k`` only when the row's list is complete.
        """
        ids = self.ids[row]
        scores = self.scores[row]
        if allow is None and not len(exclude):
            if k <= self.width:
                top = ids[:k]
                valid = top >= 0
                return top[valid].astype(np.int64), np.asarray(scores[:k][valid], dtype=np.float32)
            return None if ids[-1] >= 0 else self._complete(ids, scores)
        keep = ids >= 0
        if allow is not None:
            keep &= allow[np.maximum(ids, 0)]
        if len(exclude):
            keep &= ~np.isin(ids, np.asarray(exclude, dtype=np.int64))
        pos = np.flatnonzero(keep)
        if len(pos) < k and ids[-1] >= 0:  # truncated list: rows beyond it might survive the filters
            return None
        pos = pos[:k]
        return ids[pos].astype(np.int64), np.asarray(scores[pos], dtype=np.float32)

    @staticmethod
    def _complete(ids: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        valid = ids >= 0
        return ids[valid].astype(np.int64), np.asarray(scores[valid], dtype=np.float32)


def build_neighbours(retriever: Any, width: int, *, vectors: np.ndarray | None = None, batch: int = 4096,
                     threads: int = 0, progress: Callable[[int, int], None] | None = None) -> NeighbourTable:
    """Search every row of ``retriever`` for its ``width`` nearest other rows.

    Args:
        retriever: a built :class:`~recsys.index.base.Retriever` (its searches, approximate or exact,
            are what the table stores).
        width: neighbours kept per row (>= 1).
        vectors: the rows to search for, default ``retriever.all_vectors()``.
        batch: queries per batched search.
        threads: ScaNN search threads for the build (0: all cores); the exact backend uses BLAS's.
        progress: called with ``(rows done, rows)`` after each batch.
    """
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    if getattr(retriever, "buffer_size", 0):
        raise ValueError("a neighbour table is built over a freshly built index (this one has a side buffer)")
    vecs = retriever.all_vectors() if vectors is None else vectors
    n = len(vecs)
    fetch = width + 1
    ids_out = np.full((n, width), -1, dtype=np.int32)
    scores_out = np.full((n, width), -np.inf, dtype=np.float32)
    t0 = time.perf_counter()
    threaded = getattr(retriever, "batch_threads", None)
    with threaded(threads) if threaded is not None else nullcontext():
        for start in range(0, n, batch):
            stop = min(start + batch, n)
            ids, scores = retriever.search(np.ascontiguousarray(vecs[start:stop], dtype=np.float32), fetch)
            ids = np.asarray(ids, dtype=np.int64)
            scores = np.asarray(scores, dtype=np.float32)
            own = ids == np.arange(start, stop)[:, None]
            # leave the row itself out; where the search did not return it (ties, approximation), drop the last
            drop = np.where(own.any(axis=1), own.argmax(axis=1), ids.shape[1] - 1)
            keep = np.ones(ids.shape, dtype=bool)
            keep[np.arange(len(ids)), drop] = False
            m = min(width, ids.shape[1] - 1)
            ids_out[start:stop, :m] = ids[keep].reshape(len(ids), -1)[:, :m]
            scores_out[start:stop, :m] = scores[keep].reshape(len(ids), -1)[:, :m]
            if progress is not None:
                progress(stop, n)
    log.info("neighbour table: %d rows x %d in %.1fs", n, width, time.perf_counter() - t0)
    return NeighbourTable(ids_out, scores_out)


def save_neighbours(directory: str | Path, table: NeighbourTable) -> None:
    out = Path(directory)
    np.save(out / IDS_FILE, np.ascontiguousarray(table.ids, dtype=np.int32))
    np.save(out / SCORES_FILE, np.ascontiguousarray(table.scores, dtype=np.float32))


def load_neighbours(directory: str | Path, *, mmap: bool = True) -> NeighbourTable | None:
    """The table saved in ``directory`` (memory-mapped), or ``None`` when it holds none."""
    src = Path(directory)
    if not (src / IDS_FILE).is_file():
        return None
    mode = "r" if mmap else None
    # plain arrays over the mapped pages (np.memmap's per-index bookkeeping costs more than the lookup)
    ids = np.asarray(np.load(src / IDS_FILE, mmap_mode=mode))
    scores = np.asarray(np.load(src / SCORES_FILE, mmap_mode=mode))
    if ids.shape != scores.shape or ids.ndim != 2:
        from recsys.errors import ArtifactError

        raise ArtifactError(f"{src}: neighbour table shapes differ: ids {ids.shape}, scores {scores.shape}")
    return NeighbourTable(ids, scores)
