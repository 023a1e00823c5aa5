"""Users' interaction histories with recency ranks, and the recency weights built from them.

A :class:`History` holds, for each user, their distinct items with the combined weight and the recency
rank of the item's newest event among the user's distinct items (0 = the item touched last). Recency is
counted in events, not in days: a user who rates 40 films in one evening and then stops has a clear
"latest" even though the clock barely moved, and the same constants work for a shop with daily dates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = ["History", "filter_history", "item_tie_rank", "profile_weights", "recency_weights"]


@dataclass(frozen=True)
class History:
    """Distinct (user, item) pairs grouped by user, newest first.

    Attributes:
        n_users, n_items: the shape of the matrices built from it.
        indptr: ``(n_users + 1,)`` int64 offsets of each user's block.
        items: ``(nnz,)`` int64 item rows.
        rank: ``(nnz,)`` float32 recency rank within the user (0 = newest).
        weight: ``(nnz,)`` float32 combined weight of the pair.
    """

    n_users: int
    n_items: int
    indptr: np.ndarray
    items: np.ndarray
    rank: np.ndarray
    weight: np.ndarray

    @classmethod
    def from_events(
        cls,
        user: np.ndarray,
        item: np.ndarray,
        n_users: int,
        n_items: int,
        weight: np.ndarray | None = None,
        combine: str = "max",
    ) -> History:
        """Build from events in time order within each user (sort by user, time, tie key first).

        Args:
            user, item: ``(n,)`` int rows, already ordered by time within each user.
            weight: ``(n,)`` per-event weights (default 1).
            combine: how repeats of a pair combine their weights: ``max`` (default: a repeat counts
                once), ``sum`` or ``last``.
        """
        if combine not in ("max", "sum", "last"):
            raise ValueError(f"combine must be one of ['last', 'max', 'sum'], got {combine!r}")
        user = np.asarray(user, dtype=np.int64)
        item = np.asarray(item, dtype=np.int64)
        w = np.ones(user.shape[0], dtype=np.float32) if weight is None else np.asarray(weight, dtype=np.float32)
        pos = np.arange(user.shape[0], dtype=np.int64)
        key = user * n_items + item
        order = np.lexsort((pos, key))
        key_s = key[order]
        last = np.ones(key_s.shape[0], dtype=bool)
        last[:-1] = key_s[1:] != key_s[:-1]
        starts = np.flatnonzero(np.concatenate([[True], last[:-1]])) if key_s.size else np.zeros(0, dtype=np.int64)
        sel = order[last]  # the newest event of each pair
        if combine == "last":
            pair_w = w[sel]
        elif combine == "sum":
            pair_w = np.add.reduceat(w[order], starts) if key_s.size else np.zeros(0, np.float32)
        else:
            pair_w = np.maximum.reduceat(w[order], starts) if key_s.size else np.zeros(0, np.float32)
        p_user, p_item, p_pos = user[sel], item[sel], pos[sel]
        by_user = np.lexsort((-p_pos, p_user))
        p_user, p_item, pair_w = p_user[by_user], p_item[by_user], pair_w[by_user]
        counts = np.bincount(p_user, minlength=n_users)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        rank = (np.arange(p_user.shape[0]) - indptr[p_user]).astype(np.float32)
        return cls(n_users, n_items, indptr, p_item, rank, pair_w.astype(np.float32))

    @property
    def counts(self) -> np.ndarray:
        """``(n_users,)`` int64 distinct items per user."""
        return np.diff(self.indptr)

    def matrix(self, values: np.ndarray | None = None) -> sp.csr_matrix:
        """``(n_users, n_items)`` float32 CSR with ``values`` (default: the weights) at the pairs."""
        data = self.weight if values is None else np.asarray(values, dtype=np.float32)
        mat = sp.csr_matrix((data, self.items, self.indptr), shape=(self.n_users, self.n_items))
        mat.sort_indices()
        return mat

    def select(self, users: np.ndarray) -> History:
        """The histories of ``users`` (in that order), as a new History with ``len(users)`` rows."""
        users = np.asarray(users, dtype=np.int64)
        lo, hi = self.indptr[users], self.indptr[users + 1]
        counts = hi - lo
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        # position k of the output block of user r reads lo[r] + k
        idx = np.repeat(lo - indptr[:-1], counts) + np.arange(indptr[-1], dtype=np.int64)
        return History(len(users), self.n_items, indptr, self.items[idx], self.rank[idx], self.weight[idx])

    def item_counts(self) -> np.ndarray:
        """``(n_items,)`` float64 number of users per item."""
        return np.bincount(self.items, minlength=self.n_items).astype(np.float64)


def recency_weights(history: History, tau: float, beta: float) -> np.ndarray:
    """Fold-in weights ``weight * (1 + beta * exp(-rank / tau))`` per pair, ``(nnz,)`` float32."""
    return (history.weight * (1.0 + beta * np.exp(-history.rank / tau))).astype(np.float32)


def profile_weights(history: History, tau: float) -> np.ndarray:
    """Content-profile weights ``weight * exp(-rank / tau)`` per pair, ``(nnz,)`` float32."""
    return (history.weight * np.exp(-history.rank / tau)).astype(np.float32)


def filter_history(history: History, keep: np.ndarray) -> History:
    """Keep the pairs where ``keep`` is True; ranks are recounted among the kept pairs (0 = newest kept).

    Args:
        keep: ``(nnz,)`` bool over the pairs of ``history``.
    """
    keep = np.asarray(keep, dtype=bool)
    users = np.repeat(np.arange(history.n_users), history.counts)[keep]
    counts = np.bincount(users, minlength=history.n_users)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    rank = (np.arange(users.shape[0]) - indptr[users]).astype(np.float32)
    return History(history.n_users, history.n_items, indptr, history.items[keep], rank, history.weight[keep])


def item_tie_rank(item_ids: np.ndarray) -> np.ndarray:
    """Rank of every item id in tie-break order.

    Ids compare as numbers when every id is a canonical integer (``"42"``, not ``"042"``), otherwise as
    strings. Returns ``(n_items,)`` int64 with values ``0 .. n_items - 1``.
    """
    ids = [str(x) for x in item_ids]
    numeric = all(s.isdigit() and str(int(s)) == s for s in ids)
    keys: list[int] | list[str] = [int(s) for s in ids] if numeric else ids
    order = sorted(range(len(ids)), key=keys.__getitem__)
    rank = np.empty(len(ids), dtype=np.int64)
    rank[np.asarray(order, dtype=np.int64)] = np.arange(len(ids), dtype=np.int64)
    return rank


def user_history(item_rows: Sequence[np.ndarray], ts: Sequence[np.ndarray], weights: Sequence[np.ndarray],
                 tie_rank: np.ndarray, n_items: int) -> History:
    """Histories of some users from their events (catalogue rows, unix times, pair weights).

    Events are ordered by time, then the item's tie rank, as training orders them; a pair keeps its
    strongest weight and the recency of its newest event.
    """
    users, items, w = [], [], []
    for u, (rows, t, wt) in enumerate(zip(item_rows, ts, weights)):
        rows = np.asarray(rows, dtype=np.int64)
        order = np.lexsort((tie_rank[rows], np.asarray(t, dtype=np.int64)))
        users.append(np.full(rows.shape[0], u, dtype=np.int64))
        items.append(rows[order])
        w.append(np.asarray(wt, dtype=np.float32)[order])
    cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt))
    return History.from_events(cat(users, np.int64), cat(items, np.int64), len(item_rows), n_items,
                               weight=cat(w, np.float32), combine="max")
