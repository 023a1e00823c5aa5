"""The two offline protocols of ``EVALUATION.md`` as pure functions of event arrays.

``temporal-20`` (home feed): per user, events sorted by time (ties by item id), the last
``round(0.2 * n)`` events (at least 1) of users with ``n >= 2`` events are the test set. ``n`` counts
every event, repeats included (this is what gives the published 842 H&M test users; counting distinct
items would give 802); a repeated (user, item) pair then counts once in the training matrix and once in
the test set. A test item the user also has in training cannot be recommended (training items are
excluded from the ranking) and stays in the test set, as the published counts imply.

``cold-items`` (new items): ``random.Random(0).sample(range(n_items), int(0.2 * n_items))`` picks the
cold items in ``items.csv`` row order; all their events leave training; the test users are everyone with
an event on a cold item, their test set is those cold items, and only cold items are ranked.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recsys.errors import ConfigError
from recsys.evaluation.data import Events

__all__ = ["PROTOCOLS", "Split", "cold_items_split", "make_split", "sort_events", "temporal_split"]

PROTOCOLS = ("temporal-20", "cold-items")


@dataclass(frozen=True)
class Split:
    """A train/test split.

    Attributes:
        protocol: ``temporal-20`` or ``cold-items``.
        n_users, n_items: sizes of the row spaces.
        train: the training events (repeats kept, sorted by user, time, tie rank).
        test_users: ``(n_test,)`` int64 user rows, ascending.
        test_items: one int64 array of distinct item rows per test user.
        candidates: ``(n_candidates,)`` int64 item rows that may be ranked; ``None`` means every item.
        exclude_train: whether items in the user's training events are removed from the ranking.
    """

    protocol: str
    n_users: int
    n_items: int
    train: Events
    test_users: np.ndarray
    test_items: list[np.ndarray]
    candidates: np.ndarray | None
    exclude_train: bool

    def train_matrix(self) -> sp.csr_matrix:
        """``(n_users, n_items)`` float32 CSR, 1 where the user has at least one training event."""
        return binary_matrix(self.train, self.n_users, self.n_items)


def binary_matrix(events: Events, n_users: int, n_items: int) -> sp.csr_matrix:
    """``(n_users, n_items)`` float32 CSR with 1 for every (user, item) pair present in ``events``."""
    mat = sp.csr_matrix(
        (np.ones(len(events), dtype=np.float32), (events.user, events.item)), shape=(n_users, n_items)
    )
    mat.sum_duplicates()
    mat.data[:] = 1.0
    return mat


def sort_events(events: Events, tie_rank: np.ndarray) -> Events:
    """Events sorted by user, then time, then the item's tie rank (stable)."""
    order = np.lexsort((tie_rank[events.item], events.ts, events.user))
    return events.take(order)


def _group_bounds(sorted_user: np.ndarray, n_users: int) -> np.ndarray:
    """``(n_users + 1,)`` offsets of each user's block in user-sorted events."""
    counts = np.bincount(sorted_user, minlength=n_users)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def temporal_split(events: Events, n_users: int, n_items: int, tie_rank: np.ndarray, fraction: float = 0.2) -> Split:
    """Per user, the last ``round(fraction * n)`` events (at least 1) are test when ``n >= 2``."""
    ev = sort_events(events, tie_rank)
    bounds = _group_bounds(ev.user, n_users)
    is_test = np.zeros(len(ev), dtype=bool)
    test_users: list[int] = []
    test_items: list[np.ndarray] = []
    for u in range(n_users):
        lo, hi = int(bounds[u]), int(bounds[u + 1])
        n = hi - lo
        if n < 2:
            continue
        k = max(1, round(fraction * n))
        is_test[hi - k : hi] = True
        test_users.append(u)
        test_items.append(np.unique(ev.item[hi - k : hi]))
    return Split(
        protocol="temporal-20",
        n_users=n_users,
        n_items=n_items,
        train=ev.take(~is_test),
        test_users=np.asarray(test_users, dtype=np.int64),
        test_items=test_items,
        candidates=None,
        exclude_train=True,
    )


def cold_item_rows(n_items: int, fraction: float = 0.2, seed: int = 0) -> np.ndarray:
    """The protocol's cold items: ``random.Random(seed).sample(range(n_items), int(fraction * n_items))``."""
    return np.asarray(random.Random(seed).sample(range(n_items), int(fraction * n_items)), dtype=np.int64)


def cold_items_split(
    events: Events, n_users: int, n_items: int, tie_rank: np.ndarray, fraction: float = 0.2, seed: int = 0
) -> Split:
    """Hold out a random ``fraction`` of the catalogue with all its events."""
    ev = sort_events(events, tie_rank)
    cold = cold_item_rows(n_items, fraction, seed)
    is_cold_item = np.zeros(n_items, dtype=bool)
    is_cold_item[cold] = True
    is_test = is_cold_item[ev.item]
    test = ev.take(is_test)
    test_users = np.unique(test.user)
    pairs = np.unique(np.stack([test.user, test.item], axis=1), axis=0)
    bounds = np.searchsorted(pairs[:, 0], test_users, side="left")
    ends = np.searchsorted(pairs[:, 0], test_users, side="right")
    return Split(
        protocol="cold-items",
        n_users=n_users,
        n_items=n_items,
        train=ev.take(~is_test),
        test_users=test_users.astype(np.int64),
        test_items=[pairs[a:b, 1].astype(np.int64) for a, b in zip(bounds, ends)],
        candidates=np.sort(cold),
        exclude_train=False,
    )


def make_split(protocol: str, events: Events, n_users: int, n_items: int, tie_rank: np.ndarray) -> Split:
    """Dispatch on the protocol name (one of :data:`PROTOCOLS`)."""
    if protocol == "temporal-20":
        return temporal_split(events, n_users, n_items, tie_rank)
    if protocol == "cold-items":
        return cold_items_split(events, n_users, n_items, tie_rank)
    raise ConfigError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
