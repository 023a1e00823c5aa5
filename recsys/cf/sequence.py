"""A sequence-aware CF component: item-to-next-item transitions (a first-order Markov chain).

``T[i, j]`` counts how often item ``j`` came right after item ``i`` in a user's history (within
``window`` steps, the ``d``-th next item weighing ``decay ** (d - 1)``), each row divided by its total
plus ``shrink`` (rare items' rows stay small). A user scores ``r @ T`` where ``r`` weighs their items by
recency, ``exp(-rank / tau)`` (``rank`` 0 = the latest item; :func:`recsys.cf.history.profile_weights`), so the last items vote for what tends to
follow them. It uses only the order of each user's events, so it works with sequence positions as well
as with real times; whether it helps (and how much) is chosen on validation like every other weight
(``HybridParams.seq_weight``: 0 leaves the score as it was).
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from recsys.cf.history import History
from recsys.cf.itemitem import ItemItem

log = logging.getLogger(__name__)

__all__ = ["fit_transitions"]


def fit_transitions(history: History, window: int = 1, decay: float = 0.5, shrink: float = 5.0) -> ItemItem:
    """The row-normalised transition matrix of a history, as an :class:`ItemItem` of kind ``transitions``.

    Args:
        history: users' distinct items, newest first (a repeated item counts at its latest position).
        window: how many following items each item links to.
        decay: weight of the ``d``-th following item is ``decay ** (d - 1)``.
        shrink: added to each row's total before dividing.

    Returns:
        ``(n_items, n_items)`` float32 CSR inside an ``ItemItem``.
    """
    user = np.repeat(np.arange(history.n_users), history.counts)
    pos = np.arange(history.items.shape[0])
    rows, cols, vals = [], [], []
    for d in range(1, window + 1):
        ok = pos + d < history.indptr[user + 1]  # newest first: position p + d is d steps older than p
        rows.append(history.items[pos[ok] + d])
        cols.append(history.items[pos[ok]])
        vals.append(np.full(int(ok.sum()), decay ** (d - 1), np.float32))
    n = history.n_items
    t = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n),
                      dtype=np.float32)
    t.sum_duplicates()
    totals = np.asarray(t.sum(axis=1)).ravel()
    t = sp.csr_matrix(sp.diags((1.0 / (totals + shrink)).astype(np.float32)) @ t, dtype=np.float32)
    log.info("transitions: %d item pairs over %d items", t.nnz, n)
    return ItemItem("transitions", t)

