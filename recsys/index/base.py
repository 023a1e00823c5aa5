"""The retriever contract, input checks and the side buffer of late vectors (filters and top-k helpers:
:mod:`recsys.index.filters`).

Ids are row numbers into the indexed matrix (``0 .. size - 1``); the id map maps them to external
ids. Similarity is the inner product (vectors are L2-normalised upstream, so it is the cosine).

Updates without a rebuild: :meth:`BaseRetriever.add` appends rows and :meth:`BaseRetriever.update`
replaces rows. Both go to a small *side buffer* that is searched exactly and merged with the base
index at query time; a replaced base row is hidden from the base results. The buffer is immutable
and swapped whole under a lock, so searches running in other threads see either the old or the new
state. It is saved with the retriever; a periodic rebuild (``build_index(r.all_vectors(), cfg)``)
folds it into the base index. Rows are never deleted: unavailable items are filtered with masks.
"""

from __future__ import annotations

import abc
import copy
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from recsys.index.filters import NEG_INF, NO_ROWS, Exclude, RowFilter, merge_top_k, top_k

log = logging.getLogger(__name__)



@runtime_checkable
class Retriever(Protocol):
    """Maximum inner product search over a fixed-dimension matrix of vectors.

    Attributes:
        backend: ``"exact"`` or ``"scann"``.
        dim: vector dimension.
        size: rows searchable now (base index plus vectors added since).
        info: build facts (recall, params, timings) written into the manifest.
    """

    backend: ClassVar[str]
    dim: int
    info: dict[str, Any]

    @property
    def size(self) -> int: ...

    def search(
        self, query: np.ndarray, k: int, *, allow: np.ndarray | None = None, exclude: Exclude = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` rows by inner product.

        Args:
            query: ``(dim,)`` or ``(n, dim)`` float32.
            k: wanted neighbours, >= 1 (may exceed ``size``).
            allow: ``(size,)`` bool shared by all queries, or ``(n, size)`` bool per query: rows that
                may be returned.
            exclude: row ids never returned: one sequence for every query, or (batched form) a
                sequence of ``n`` sequences, one per query.

        Returns:
            ``(ids, scores)``. Single query: ``(m,)`` int64 and ``(m,)`` float32 with
            ``m = min(k, allowed rows)``. Batched: ``(n, min(k, size))`` arrays; a query with fewer
            allowed rows is padded with id ``-1`` and score ``-inf``. Scores are descending.
        """
        ...

    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Append ``(m, dim)`` vectors; returns their new ids ``(m,)`` int64."""
        ...

    def update(self, ids: np.ndarray | Sequence[int], vectors: np.ndarray) -> None:
        """Replace the vectors of existing rows ``ids`` with ``(len(ids), dim)`` vectors."""
        ...

    def all_vectors(self) -> np.ndarray:
        """Every current vector ``(size, dim)`` float32, in id order (updates applied)."""
        ...

    def save(self, directory: str | Path) -> None:
        """Write the retriever and its ``manifest.json`` into ``directory`` (created)."""
        ...


# --------------------------------------------------------------------------- validation


def as_matrix(vectors: np.ndarray, dim: int | None = None, what: str = "vectors") -> np.ndarray:
    """Validate and return ``(n, dim)`` C-contiguous float32 (no copy when already so)."""
    arr = np.asarray(vectors)
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (n, dim), got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{what} must have dimension {dim}, got {arr.shape[1]}")
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must be numeric, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return arr


def as_queries(query: np.ndarray, dim: int) -> tuple[np.ndarray, bool]:
    """Return ``(queries (n, dim) float32, single)`` where ``single`` says the input was 1-D."""
    arr = np.asarray(query)
    if arr.ndim == 1:
        return as_matrix(arr[None, :], dim, "query"), True
    if arr.ndim == 2:
        return as_matrix(arr, dim, "queries"), False
    raise ValueError(f"query must have shape (dim,) or (n, dim), got {arr.shape}")


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


# --------------------------------------------------------------------------- side buffer


@dataclass(frozen=True)
class SideBuffer:
    """Vectors added or replaced since the base index was built (immutable; replaced whole).

    Attributes:
        ids: ``(m,)`` int64 row ids; ``>= n_base`` for appended rows, ``< n_base`` for replacements.
        vectors: ``(m, dim)`` float32.
        n_added: appended rows, so ``size = n_base + n_added``.
    """

    ids: np.ndarray
    vectors: np.ndarray
    n_added: int = 0
    hidden: np.ndarray = field(default_factory=lambda: NO_ROWS)
    """``(h,)`` int64 sorted base rows replaced by a buffered vector."""

    @classmethod
    def empty(cls, dim: int) -> SideBuffer:
        return cls(NO_ROWS, np.empty((0, dim), dtype=np.float32))

    def __len__(self) -> int:
        return len(self.ids)

    def with_rows(self, ids: np.ndarray, vectors: np.ndarray, n_base: int, n_added: int) -> SideBuffer:
        """A new buffer with ``ids`` set to ``vectors`` (later rows win over earlier ones)."""
        keep = ~np.isin(self.ids, ids)
        _, last = np.unique(ids[::-1], return_index=True)
        last = len(ids) - 1 - last
        all_ids = np.concatenate([self.ids[keep], ids[last]])
        all_vecs = np.concatenate([self.vectors[keep], vectors[last]])
        hidden = np.unique(all_ids[all_ids < n_base])
        return SideBuffer(all_ids, np.ascontiguousarray(all_vecs), n_added, hidden)


class BaseRetriever(abc.ABC):
    """Shared search logic: validation, side buffer, merging. Subclasses search the base rows.

    A subclass sets ``backend``, ``dim``, ``n_base`` and ``info`` and implements
    :meth:`_search_base` and :meth:`_base_vectors`.
    """

    backend: ClassVar[str] = ""

    def __init__(self, dim: int, n_base: int, buffer: SideBuffer | None = None, buffer_warn: int = 50_000) -> None:
        self.dim = dim
        self.n_base = n_base
        self.info: dict[str, Any] = {}
        self._buffer = buffer if buffer is not None else SideBuffer.empty(dim)
        self._lock = threading.Lock()
        self._buffer_warn = buffer_warn
        self._warned = False
        self.neighbours: Any = None
        """A :class:`~recsys.index.neighbours.NeighbourTable` of the base rows, when one was built or loaded.
        It stays valid after :meth:`add` / :meth:`update`: :meth:`neighbours_of` leaves replaced rows out of its
        lists and merges an exact scan of the side buffer."""

    # -- subclass hooks
    @abc.abstractmethod
    def _search_base(
        self, queries: np.ndarray, k: int, filt: RowFilter, hidden: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` (``k <= n_base``) among base rows: ``(n, k)`` ids (-1 pads) and scores.

        ``filt`` is over ``size`` rows (only its first ``n_base`` columns concern the base);
        ``hidden`` are base rows never to return.
        """

    @abc.abstractmethod
    def _base_vectors(self) -> np.ndarray:
        """``(n_base, dim)`` float32: the indexed rows."""

    def base_vectors(self) -> np.ndarray:
        """``(n_base, dim)`` float32: the rows the index was built from (memory-mapped when it was loaded from
        a published version); rows replaced or added since are in the side buffer, not here."""
        return np.asarray(self._base_vectors())

    # -- contract
    @property
    def size(self) -> int:
        return self.n_base + self._buffer.n_added

    @property
    def buffer_size(self) -> int:
        """Vectors held in the side buffer (added or replaced since the build)."""
        return len(self._buffer)

    def search(
        self, query: np.ndarray, k: int, *, allow: np.ndarray | None = None, exclude: Exclude = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`Retriever.search`."""
        k = check_k(k)
        queries, single = as_queries(query, self.dim)
        buf = self._buffer  # one snapshot for the whole call
        size = self.n_base + buf.n_added
        filt = RowFilter.build(len(queries), size, allow, exclude, single)
        width = min(k, size)
        n = len(queries)
        if self.n_base > 0:
            ids, scores = self._search_base(queries, min(width, self.n_base), filt, buf.hidden)
        else:
            ids = np.empty((n, 0), dtype=np.int64)
            scores = np.empty((n, 0), dtype=np.float32)
        if len(buf):
            b_ids, b_scores = _search_buffer(queries, buf, filt, width)
            ids, scores = merge_top_k(ids, scores, b_ids, b_scores, width)
        elif ids.shape[1] < width:
            ids, scores = merge_top_k(ids, scores, ids[:, :0], scores[:, :0], width)
        if single:
            valid = ids[0] >= 0
            return ids[0][valid], scores[0][valid]
        return ids, scores

    def neighbours_of(
        self, row: int, k: int, *, allow: np.ndarray | None = None, exclude: Sequence[int] = ()
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` rows nearest to row ``row``, the row itself left out: what
        ``search(vector of row, k, allow=allow, exclude=[row, *exclude])`` returns, read from the neighbour
        table when it can tell (see :meth:`~recsys.index.neighbours.NeighbourTable.lookup`), else searched.

        With a side buffer, the table's lists skip the replaced base rows and are merged with an exact scan
        of the buffered vectors; a row that was itself added or replaced is searched.

        Returns:
            ``(ids (m,) int64, scores (m,) float32)``, as a single-query :meth:`search`.
        """
        k = check_k(k)
        buf = self._buffer
        size = self.n_base + buf.n_added
        if not 0 <= row < size:
            raise ValueError(f"row must be in 0..{size - 1}, got {row}")
        table = self.neighbours
        own = row >= self.n_base or (buf.hidden.size and row in buf.hidden)
        if table is not None and not own:
            skip = exclude
            if buf.hidden.size:
                skip = np.concatenate([np.asarray(exclude, dtype=np.int64), buf.hidden])
            found = table.lookup(row, k, allow=allow, exclude=skip)
            if found is not None:
                if not len(buf):
                    return found
                return _merge_buffer(found, np.asarray(self._base_vectors()[row], dtype=np.float32), buf, k,
                                     allow, [row, *exclude])
        if own:  # added or replaced: its vector is in the buffer
            query = buf.vectors[int(np.flatnonzero(buf.ids == row)[-1])]
        else:
            query = np.asarray(self._base_vectors()[row], dtype=np.float32)
        return self.search(query, k, allow=allow, exclude=[row, *exclude])

    def copy(self) -> BaseRetriever:
        """A retriever over the same base index and table whose side buffer then changes on its own:
        :meth:`add` / :meth:`update` on the copy leave this one as it is (a serving state being replaced
        keeps answering from its own)."""
        out = copy.copy(self)
        out._lock = threading.Lock()
        return out

    def apply_rows(self, vectors: np.ndarray, *, max_buffered: int, chunk: int = 65_536) -> bool:
        """Bring the index to ``vectors`` through the side buffer, without a rebuild: rows whose vector
        differs are replaced (:meth:`update`), rows beyond :attr:`size` are appended (:meth:`add`).

        Meant for a catalogue that kept its row order and grew or changed a little (new items get new
        rows at the end). Returns ``False`` and leaves the index as it was when ``vectors`` has fewer
        rows or another dimension, or when the buffer would then hold more than ``max_buffered`` rows
        (a shifted row order makes every row differ, so it lands here too): rebuild instead.
        """
        vecs = np.asarray(vectors)
        if vecs.ndim != 2 or vecs.shape[1] != self.dim or len(vecs) < self.size:
            return False
        buf = self._buffer
        base = self._base_vectors()
        parts = []
        for start in range(0, self.n_base, chunk):
            stop = min(start + chunk, self.n_base)
            parts.append(np.flatnonzero((np.asarray(base[start:stop]) != vecs[start:stop]).any(axis=1)) + start)
            if sum(len(p) for p in parts) > max_buffered:
                return False
        changed = np.concatenate(parts) if parts else NO_ROWS
        if len(buf):  # rows in the buffer compare with their buffered vector, not the base one
            same = (buf.vectors == vecs[buf.ids]).all(axis=1)
            changed = np.union1d(np.setdiff1d(changed, buf.ids[same]), buf.ids[~same])
        new = np.arange(self.size, len(vecs), dtype=np.int64)
        if len(np.union1d(buf.ids, changed)) + len(new) > max_buffered:
            return False
        if len(changed):
            self.update(changed, vecs[changed])
        if len(new):
            self.add(vecs[new])
        return True

    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Append vectors ``(m, dim)``; returns their ids ``(m,)`` int64 (``size .. size + m - 1``)."""
        vecs = as_matrix(vectors, self.dim)
        with self._lock:
            buf = self._buffer
            start = self.n_base + buf.n_added
            ids = np.arange(start, start + len(vecs), dtype=np.int64)
            self._buffer = buf.with_rows(ids, vecs, self.n_base, buf.n_added + len(vecs))
            self._maybe_warn()
        return ids

    def update(self, ids: np.ndarray | Sequence[int], vectors: np.ndarray) -> None:
        """Replace the vectors of rows ``ids`` (existing rows only) with ``(len(ids), dim)`` vectors."""
        idx = np.asarray(ids, dtype=np.int64).ravel()
        vecs = as_matrix(vectors, self.dim)
        if len(idx) != len(vecs):
            raise ValueError(f"update got {len(idx)} ids but {len(vecs)} vectors")
        with self._lock:
            buf = self._buffer
            size = self.n_base + buf.n_added
            if idx.size and (idx.min() < 0 or idx.max() >= size):
                raise ValueError(f"update ids must be existing rows 0..{size - 1}; use add() for new rows")
            self._buffer = buf.with_rows(idx, vecs, self.n_base, buf.n_added)
            self._maybe_warn()

    def all_vectors(self) -> np.ndarray:
        """``(size, dim)`` float32: the base vectors with the side buffer applied, in id order."""
        buf = self._buffer
        out = np.empty((self.n_base + buf.n_added, self.dim), dtype=np.float32)
        out[: self.n_base] = self._base_vectors()
        if len(buf):
            out[buf.ids] = buf.vectors
        return out

    def _maybe_warn(self) -> None:
        if len(self._buffer) > self._buffer_warn and not self._warned:
            self._warned = True
            log.warning(
                "%d vectors were added or replaced since the %s index was built; queries scan them "
                "exactly, rebuild the index to fold them in",
                len(self._buffer),
                self.backend,
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(size={self.size}, dim={self.dim}, buffered={len(self._buffer)})"


def _merge_buffer(found: tuple[np.ndarray, np.ndarray], query: np.ndarray, buf: SideBuffer, k: int,
                  allow: np.ndarray | None, exclude: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """One query's top ``k`` from ``found`` (descending, from the base rows) and an exact scan of the
    buffer (rows ``allow`` keeps, not in ``exclude``); ties by lower row id, as :func:`top_k`."""
    b_scores = buf.vectors @ query
    if len(exclude) <= 8:  # the row itself and a few ids: cheaper than np.isin
        keep = np.ones(len(buf.ids), dtype=bool)
        for e in exclude:
            keep &= buf.ids != e
    else:
        keep = ~np.isin(buf.ids, np.asarray(exclude, dtype=np.int64))
    if allow is not None:
        keep &= allow[buf.ids]
    ids, scores = found
    if not keep.any() or (len(ids) >= k and float(b_scores[keep].max()) < float(scores[k - 1])):
        return ids[:k], scores[:k]  # no buffered row reaches the list
    all_ids = np.concatenate([ids, buf.ids[keep]])
    all_scores = np.concatenate([scores, b_scores[keep].astype(np.float32)])
    order = np.lexsort((all_ids, -all_scores))[:k]
    return all_ids[order], all_scores[order]


def _search_buffer(queries: np.ndarray, buf: SideBuffer, filt: RowFilter, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact search of the side buffer: ``(n, min(k, m))`` row ids and scores (-1 / -inf pads)."""
    scores = queries @ buf.vectors.T  # (n, m)
    for i in range(len(queries)):
        row = filt.allow_row(i)
        if row is not None:
            scores[i, ~row[buf.ids]] = NEG_INF
        excl = filt.exclude_row(i)
        if excl.size:
            scores[i, np.isin(buf.ids, excl)] = NEG_INF
    pos, top = top_k(scores, min(k, scores.shape[1]))
    ids = buf.ids[np.maximum(pos, 0)]
    ids[pos < 0] = -1
    return ids, top
