"""Validation splits carved from *training* histories, used to choose the hybrid's settings.

Two carves, mirroring the two things the hybrid must do:

- :func:`temporal_holdout`: each user's newest ``fraction`` of distinct items (at least 1, users with 2
  or more items) is held out; ranking is over every item the user has not kept (home feed);
- :func:`item_holdout`: a seeded random ``fraction`` of the items that have events is held out with all
  their pairs; users who had one are validated by ranking the held-out items only (new items).

The score on a split is :func:`recsys.recommend.selection.validation_ndcg`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.cf.history import History, filter_history

__all__ = ["ValidationSplit", "item_holdout", "temporal_holdout"]


@dataclass(frozen=True)
class ValidationSplit:
    """A carve of a training history.

    Attributes:
        train: the history the components are fitted on.
        users: ``(n_val,)`` int64 validation users (rows of ``train``).
        targets: per validation user, the held-out item rows.
        candidates: ``(n_cand,)`` item rows that are ranked; ``None``: every item not in the user's
            ``train`` history.
    """

    train: History
    users: np.ndarray
    targets: list[np.ndarray]
    candidates: np.ndarray | None


def _sample_users(
    users: np.ndarray, targets: list[np.ndarray], max_users: int, seed: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    if users.shape[0] <= max_users:
        return users, targets
    pick = np.sort(np.random.default_rng(seed).choice(users.shape[0], size=max_users, replace=False))
    return users[pick], [targets[i] for i in pick]


def temporal_holdout(history: History, fraction: float, max_users: int = 2000, seed: int = 0) -> ValidationSplit:
    """Hold out each user's ``max(1, round(fraction * n))`` newest items (users with ``n >= 2``)."""
    counts = history.counts
    k = np.where(counts >= 2, np.maximum(1, np.round(fraction * counts)), 0).astype(np.int64)
    per_pair_k = np.repeat(k, counts)
    held = history.rank < per_pair_k
    users = np.flatnonzero(k > 0).astype(np.int64)
    targets = [history.items[history.indptr[u] : history.indptr[u] + k[u]] for u in users]
    users, targets = _sample_users(users, targets, max_users, seed)
    return ValidationSplit(filter_history(history, ~held), users, targets, None)


def item_holdout(history: History, fraction: float, max_users: int = 2000, seed: int = 0) -> ValidationSplit:
    """Hold out a seeded random ``fraction`` of the items with events, with all their pairs."""
    warm = np.flatnonzero(history.item_counts() > 0)
    n_cold = max(1, int(round(fraction * warm.shape[0]))) if warm.size else 0
    cold = np.sort(np.random.default_rng(seed).choice(warm, size=n_cold, replace=False)) if n_cold else warm[:0]
    is_cold = np.zeros(history.n_items, dtype=bool)
    is_cold[cold] = True
    held = is_cold[history.items]
    pair_user = np.repeat(np.arange(history.n_users), history.counts)
    users = np.unique(pair_user[held]).astype(np.int64)
    targets = []
    for u in users:
        lo, hi = history.indptr[u], history.indptr[u + 1]
        targets.append(np.unique(history.items[lo:hi][held[lo:hi]]))
    users, targets = _sample_users(users, targets, max_users, seed)
    return ValidationSplit(filter_history(history, ~held), users, targets, cold)
