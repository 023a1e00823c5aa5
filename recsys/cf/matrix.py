"""The user x item interaction matrix: event weights, time decay, repeat rule and confidence scaling.

Pure functions of numpy arrays; reading the events table is in :mod:`recsys.cf.sql`.

The weight of one event is ``type_weight[event_type] * value_factor(value) * decay(ts)``:

- ``type_weight`` comes from ``config.event_types`` (view 1, add-to-cart 4, purchase 8, ...);
- ``value_factor`` is ``cf.value_transform`` applied to the event's value for the types in
  ``cf.value_event_types`` (a rating: ``linear`` uses it as is, ``threshold`` keeps only ratings
  ``>= value_threshold``), 1 otherwise;
- ``decay`` is ``0.5 ** (age_days / cf.half_life_days)`` with the age counted back from the newest event
  (or a given reference time), 1 when no half-life is set.

Repeated events of one (user, item) pair are then combined by ``cf.combine``: ``sum`` (default: three
views weigh three times one view), ``max`` (the strongest single event) or ``last`` (the most recent
event's weight, ties in time going to the larger weight). Finally ``cf.confidence`` turns weights into
the confidences that ALS sees: ``alpha * w``, ``alpha * bm25(w)`` or ``w``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.cf.idmap import IdMap
from recsys.cf.settings import CFConfig

__all__ = [
    "InteractionMatrix",
    "Bm25Stats",
    "apply_confidence",
    "bm25_stats",
    "combine_events",
    "decay_factors",
    "event_weights",
    "value_factors",
]

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class InteractionMatrix:
    """Combined event weights (before confidence scaling) with the id maps of its rows and columns.

    Attributes:
        weights: ``(len(users), len(items))`` float32 CSR, sorted indices, no explicit zeros.
        users: the id map of the rows.
        items: the id map of the columns (the whole catalogue, items without events included).
        n_events: how many events went into it (after dropping zero-weight ones).
        last_ts: the newest event's unix time (the decay reference), ``None`` when empty.
    """

    weights: sp.csr_matrix
    users: IdMap
    items: IdMap
    n_events: int
    last_ts: int | None


def value_factors(values: np.ndarray, applies: np.ndarray, cfg: CFConfig) -> np.ndarray:
    """Per-event factor from the value (``NaN`` = no value).

    Args:
        values: ``(n,)`` float64, ``NaN`` where the event has no value.
        applies: ``(n,)`` bool, whether the event's type is one of ``cfg.value_event_types``.

    Returns:
        ``(n,)`` float32; ``0`` drops the event.
    """
    out = np.ones(values.shape[0], dtype=np.float32)
    use = applies & ~np.isnan(values)
    v = values[use]
    if cfg.value_transform == "linear":
        out[use] = np.maximum(v, 0.0)
    elif cfg.value_transform == "log1p":
        out[use] = np.log1p(np.maximum(v, 0.0))
    elif cfg.value_transform == "threshold":
        out[use] = (v >= cfg.value_threshold).astype(np.float32)
    return out


def event_weights(
    event_types: np.ndarray, values: np.ndarray, type_weights: Mapping[str, float], cfg: CFConfig
) -> tuple[np.ndarray, dict[str, int]]:
    """Weight of every event before decay.

    Args:
        event_types: ``(n,)`` strings.
        values: ``(n,)`` float64, ``NaN`` for none.
        type_weights: ``config.event_types``; a type missing from it weighs 0 (the event is dropped).

    Returns:
        ``(n,)`` float32 weights, and how many events of each unknown type were dropped.
    """
    cat = pd.Categorical(event_types)
    known = np.array([float(type_weights.get(str(c), 0.0)) for c in cat.categories] + [0.0], dtype=np.float32)
    codes = np.asarray(cat.codes, dtype=np.int64)  # -1 (missing) reads the trailing 0
    w = known[codes]
    counts = np.bincount(codes[codes >= 0], minlength=len(cat.categories))
    unknown = {str(c): int(counts[i]) for i, c in enumerate(cat.categories) if str(c) not in type_weights and counts[i]}
    value_types = np.array([str(c) in cfg.value_event_types for c in cat.categories] + [False])
    return w * value_factors(values, value_types[codes], cfg), unknown


def decay_factors(ts: np.ndarray, half_life_days: float | None, reference_ts: int | None = None) -> np.ndarray:
    """``0.5 ** (age_days / half_life_days)`` per event, age from ``reference_ts`` (default: newest event).

    Returns ``(n,)`` float32; all ones when ``half_life_days`` is ``None``. Events newer than the
    reference get factor 1.
    """
    if half_life_days is None or ts.shape[0] == 0:
        return np.ones(ts.shape[0], dtype=np.float32)
    ref = int(ts.max()) if reference_ts is None else int(reference_ts)
    age_days = np.maximum(ref - ts, 0) / SECONDS_PER_DAY
    return np.power(0.5, age_days / half_life_days).astype(np.float32)


def combine_events(
    user: np.ndarray,
    item: np.ndarray,
    weight: np.ndarray,
    ts: np.ndarray,
    shape: tuple[int, int],
    rule: str = "sum",
) -> sp.csr_matrix:
    """Combine per-event weights into one value per (user, item) pair.

    Args:
        user, item: ``(n,)`` int row / column numbers.
        weight: ``(n,)`` float weights (zero-weight events are ignored).
        ts: ``(n,)`` int unix times (used by ``rule="last"``).
        shape: ``(n_users, n_items)``.
        rule: ``sum``, ``max`` or ``last`` (see the module docstring).

    Returns:
        ``shape`` float32 CSR with sorted indices and no explicit zeros.
    """
    if rule not in ("sum", "max", "last"):
        raise ValueError(f"rule must be one of ['last', 'max', 'sum'], got {rule!r}")
    keep = weight > 0
    user, item, weight, ts = user[keep], item[keep], weight[keep].astype(np.float32), ts[keep]
    if rule == "sum" or user.shape[0] == 0:
        out = sp.csr_matrix((weight, (user, item)), shape=shape, dtype=np.float32)
        out.sum_duplicates()
        return out
    key = user.astype(np.int64) * shape[1] + item
    if rule == "max":
        order = np.lexsort((weight, key))
    else:  # last: newest event, ties in time to the larger weight
        order = np.lexsort((weight, ts, key))
    key_sorted = key[order]
    is_last = np.ones(key_sorted.shape[0], dtype=bool)
    is_last[:-1] = key_sorted[1:] != key_sorted[:-1]
    sel = order[is_last]
    out = sp.csr_matrix((weight[sel], (user[sel], item[sel])), shape=shape, dtype=np.float32)
    out.sort_indices()
    return out


@dataclass(frozen=True)
class Bm25Stats:
    """What BM25 weighting needs to weigh a new user's row the way training rows were weighed.

    Attributes:
        idf: ``(n_items,)`` float32 inverse document frequency of each item.
        avg_len: mean row sum over the training users.
    """

    idf: np.ndarray
    avg_len: float


def bm25_stats(weights: sp.csr_matrix) -> Bm25Stats:
    """IDF over the users who touched each item, and the mean row length."""
    n_users = max(weights.shape[0], 1)
    df = np.bincount(weights.indices, minlength=weights.shape[1]).astype(np.float64)
    idf = np.log(n_users / (1.0 + df)).clip(min=0.0) + 1e-3
    lengths = np.asarray(weights.sum(axis=1)).ravel()
    avg = float(lengths[lengths > 0].mean()) if (lengths > 0).any() else 1.0
    return Bm25Stats(idf=idf.astype(np.float32), avg_len=avg)


def apply_confidence(weights: sp.csr_matrix, cfg: CFConfig, stats: Bm25Stats | None = None) -> sp.csr_matrix:
    """Confidence matrix for implicit from combined weights (``cfg.confidence``).

    Args:
        weights: ``(n_users, n_items)`` float32 CSR of combined weights (rows may be new users).
        stats: BM25 statistics of the training matrix (``None``: computed from ``weights``).

    Returns:
        a new CSR of the same shape, float32.
    """
    out = weights.astype(np.float32, copy=True)
    if cfg.confidence == "none":
        return out
    if cfg.confidence == "bm25":
        stats = stats if stats is not None else bm25_stats(weights)
        lengths = np.asarray(weights.sum(axis=1)).ravel()
        row_len = np.repeat(lengths, np.diff(weights.indptr))
        k1, b = cfg.bm25_k1, cfg.bm25_b
        denom = k1 * (1.0 - b + b * row_len / stats.avg_len) + out.data
        out.data = (out.data * (k1 + 1.0) / denom * stats.idf[out.indices]).astype(np.float32)
    out.data *= np.float32(cfg.alpha)
    return out
