"""Item-item CF components (EASE, item-kNN): a matrix ``B`` over the model's items, a user scoring
``history row @ B``. One object serves fitting, the evaluation, the feed ranker and the artifact, so the
score of a user is computed in one place (:meth:`ItemItem.scores`).

A user is a weighted history row, so new events fold in at request time with no solve at all; items
that arrive after training have no row or column in ``B`` (their CF score is 0, as for any item without
events) and :meth:`ItemItem.laid_over` maps a serving catalogue onto the model's rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from recsys.cf.settings import CFConfig

log = logging.getLogger(__name__)

__all__ = ["ItemItem", "compose_rows", "fit_item_item"]


@dataclass(frozen=True)
class ItemItem:
    """An item-item scoring matrix laid over a catalogue.

    Attributes:
        kind: ``ease`` or ``itemknn``.
        matrix: ``(m, m)`` float32, dense (EASE) or CSR (item-kNN), over the model's item rows.
        rows: ``(n_items,)`` int64 model row of each catalogue row (``-1``: unknown to the model);
            ``None`` when the catalogue is the model's own rows.
    """

    kind: str
    matrix: np.ndarray | sp.csr_matrix
    rows: np.ndarray | None = None

    @property
    def n_items(self) -> int:
        return int(self.matrix.shape[0] if self.rows is None else self.rows.shape[0])

    def scores(self, weights: sp.csr_matrix) -> np.ndarray:
        """Raw scores ``(n_users, n_items)`` float32 of users given as ``(n_users, n_items)`` weight rows."""
        x = sp.csr_matrix(weights, dtype=np.float32)
        if self.rows is not None:
            known = np.flatnonzero(self.rows >= 0)
            x = sp.csr_matrix(x[:, known])  # the history in model rows (new items dropped)
            pick = sp.csr_matrix((np.ones(known.shape[0], np.float32), (np.arange(known.shape[0]), self.rows[known])),
                                 shape=(known.shape[0], self.matrix.shape[0]))
            x = x @ pick
        raw = x @ self.matrix
        raw = np.asarray(raw.toarray() if sp.issparse(raw) else raw, dtype=np.float32)
        if self.rows is None:
            return raw
        out = np.zeros((raw.shape[0], self.rows.shape[0]), np.float32)
        known = self.rows >= 0
        out[:, known] = raw[:, self.rows[known]]
        return out

    def laid_over(self, model_rows: np.ndarray) -> ItemItem:
        """The same model over another catalogue: ``model_rows`` ``(n,)`` int64, ``-1`` for unknown items."""
        return ItemItem(self.kind, self.matrix, compose_rows(self.rows, model_rows, self.matrix.shape[0]))

    # ------------------------------------------------------------------ persistence
    def save(self, directory: Path, name: str = "item_item") -> list[str]:
        """Write ``<name>.npy`` (dense) or ``<name>.npz`` (sparse); returns the file names."""
        if self.rows is not None:
            raise ValueError("save the model's own item-item matrix, not one laid over another catalogue")
        if sp.issparse(self.matrix):
            sp.save_npz(directory / f"{name}.npz", sp.csr_matrix(self.matrix))
            return [f"{name}.npz"]
        np.save(directory / f"{name}.npy", self.matrix)
        return [f"{name}.npy"]

    @classmethod
    def load(cls, directory: Path, kind: str, name: str = "item_item") -> ItemItem:
        """Read what :meth:`save` wrote (the dense matrix memory-mapped read-only)."""
        if (directory / f"{name}.npz").is_file():
            return cls(kind, sp.load_npz(directory / f"{name}.npz").tocsr())
        return cls(kind, np.load(directory / f"{name}.npy", mmap_mode="r"))


def fit_item_item(weights: sp.csr_matrix, cfg: CFConfig) -> ItemItem | None:
    """The item-item component of ``cfg.component`` (``None`` for ``als``) fitted on ``(n_users, n_items)`` weights.

    EASE above ``cfg.tuning.ease_max_items`` items falls back to item-kNN (logged), so memory stays bounded.
    """
    if cfg.component == "als":
        return None
    binary = sp.csr_matrix(weights, dtype=np.float32, copy=True)
    binary.data[:] = 1.0
    if cfg.component == "ease":
        if weights.shape[1] <= cfg.tuning.ease_max_items:
            from recsys.cf.ease import fit_ease

            return ItemItem("ease", fit_ease(binary, cfg.ease_lambda))
        log.warning("EASE: %d items > cf.tuning.ease_max_items (%d); using item-kNN instead",
                    weights.shape[1], cfg.tuning.ease_max_items)
    from recsys.cf.itemknn import fit_itemknn

    return ItemItem("itemknn", fit_itemknn(binary, cfg.knn_k, cfg.knn_shrink))


def compose_rows(rows: np.ndarray | None, model_rows: np.ndarray, n_model: int) -> np.ndarray | None:
    """Row map of a model laid over a catalogue, laid over another one (``-1``: unknown item).

    Args:
        rows: the current map (catalogue row -> model row), ``None`` for the model's own rows.
        model_rows: ``(n,)`` the new catalogue's rows in the current catalogue (``-1``: unknown).
        n_model: rows of the model.

    Returns:
        the composed ``(n,)`` int64 map, or ``None`` when it is the model's own rows in order.
    """
    model_rows = np.asarray(model_rows, dtype=np.int64)
    if rows is not None:
        model_rows = np.where(model_rows >= 0, rows[np.maximum(model_rows, 0)], -1)
    identity = model_rows.shape[0] == n_model and np.array_equal(model_rows, np.arange(n_model))
    return None if identity else model_rows
