"""Dense scores over a candidate set instead of the whole catalogue (large catalogues; pure numpy).

:func:`recsys.search.hybrid.run_search` on a catalogue with an ANN index over its joint-space vectors
(``ProductSearch.dense_index``) never multiplies the query with every item. Lexical scores, attribute shares
and personal scores stay ``(n,)`` arrays (BM25 sums a few sparse columns; the rest are integer compares), so
only the cosine is missing, and it is computed exactly (a gather of rows, then a dot product) for:

- **D**: the ``search.dense_candidates`` best allowed items of the index (ScaNN; an exact scan over the
  allowed rows when they are at most ``search.exact_allowed_below``, or so few that ScaNN would have to fetch
  more than ``search.max_fetch``; then D is every allowed row and the ranking is exactly the full-array one);
- **P**: the same number of best allowed items by everything but the cosine (the *partial* score);
- **extras**: any other allowed item whose partial score plus the best cosine it could have (at most D's
  lowest) could still reach the ``k``-th score found: a threshold check in the manner of Fagin's algorithm,
  so that the answer is the exact one whenever the index returned the true top D
  (at most ``search.max_extra`` of them, the best by partial score).

The dense rescaling ("0 at the mean of the allowed items, 1 at the best") uses ``q . mean(vectors[allowed])``:
the catalogue's precomputed sum minus the rows a filter leaves out (or the sum of the rows it keeps, whichever
is fewer; a strided sample of ``search.mean_sample`` rows when both are more), and the best cosine of D.
RRF needs only the ranks of the best ``search.rrf_candidates`` dense items: D of that size, ranked exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from recsys.search.engine import Catalogue, top_k
from recsys.search.settings import SearchConfig

SLACK = np.float32(1e-5)
"""Bound checks give float32 rounding this much room (an extra row too many is harmless)."""


@dataclass(frozen=True)
class DenseCandidates:
    rows: np.ndarray
    """``(m,)`` int64 allowed rows, ascending."""
    cosines: np.ndarray
    """``(m,)`` float32 exact cosines with the query."""
    exhaustive: bool
    """Every allowed row is in ``rows`` (the ranking is exact)."""


@dataclass(frozen=True)
class Parts:
    """The non-dense parts of a linear / semantic score, each ``(n,)`` or ``None``, and their weights; summed
    in the order of the full-array path so that equal inputs give equal float32 scores."""

    lexical: np.ndarray | None
    """``(n,)`` BM25 scores (``None``: semantic mode)."""
    lexical_top: float
    """The query's best BM25 (the lexical part is BM25 divided by it)."""
    w_lexical: float
    w_dense: float
    share: np.ndarray | None
    """``(n,)`` float32 share of the query's attribute mentions each row holds."""
    w_share: float
    personal: np.ndarray | None
    w_personal: float

    def score(self, rows: np.ndarray, dense: np.ndarray) -> np.ndarray:
        """``(m,)`` float32 scores of ``rows`` given their rescaled cosines ``dense``."""
        if self.lexical is None:
            s = dense.astype(np.float32)
        else:
            lex = self.lexical[rows]
            lex = lex / np.float32(self.lexical_top) if self.lexical_top > 0 else np.zeros_like(lex)
            s = (np.float32(self.w_lexical) * lex + np.float32(self.w_dense) * dense).astype(np.float32)
        if self.share is not None:
            s = s + np.float32(self.w_share) * self.share[rows]
        if self.personal is not None:
            s = s + np.float32(self.w_personal) * self.personal[rows].astype(np.float32)
        return s

    def partial(self, n: int) -> np.ndarray | None:
        """``(n,)`` float32: everything but the cosine (``None``: nothing)."""
        out = None
        if self.lexical is not None and self.lexical_top > 0 and self.w_lexical > 0:
            out = self.lexical * np.float32(self.w_lexical / self.lexical_top)
        for arr, w in ((self.share, self.w_share), (self.personal, self.w_personal)):
            if arr is not None and w > 0:
                term = np.float32(w) * arr.astype(np.float32, copy=False)
                if out is None:
                    out = term
                else:
                    out += term
        return out

    @property
    def dense_weight(self) -> float:
        return 1.0 if self.lexical is None else self.w_dense


def dense_candidates(cat: Catalogue, index: Any, query: np.ndarray, allowed: np.ndarray, want: int,
                     cfg: SearchConfig) -> DenseCandidates:
    """The ``want`` best allowed rows by cosine (from ``index``), or every allowed row (exact)."""
    n = len(allowed)
    n_allowed = int(np.count_nonzero(allowed))
    fetch = math.ceil(want * n / max(n_allowed, 1) * cfg.filter_overfetch) if n_allowed < n else want
    if index is None or n_allowed <= max(want, cfg.exact_allowed_below) or fetch > cfg.max_fetch:
        return _exact(cat, query, np.flatnonzero(allowed))
    ids, _ = index.search(query, min(fetch, n))
    ids = ids[(ids >= 0) & (ids < n)]
    ids = ids[allowed[ids]][:want]
    if len(ids) < min(want, n_allowed):  # the filter kept too few of the fetched rows
        return _exact(cat, query, np.flatnonzero(allowed))
    rows = np.sort(ids)
    return DenseCandidates(rows, cat.vectors[rows] @ query, False)


def _exact(cat: Catalogue, query: np.ndarray, rows: np.ndarray) -> DenseCandidates:
    return DenseCandidates(rows, (cat.vectors[rows] @ query).astype(np.float32), True)


def allowed_mean(cat: Catalogue, allowed: np.ndarray, sample: int) -> np.ndarray:
    """``(d,)`` float64 mean vector of the allowed rows (all have a vector): the catalogue's sum minus the
    rows left out, or the sum of the rows kept, whichever is fewer; a strided sample of about ``sample``
    kept rows when both are more."""
    n_allowed = int(np.count_nonzero(allowed))
    if n_allowed == 0:
        return np.zeros(cat.dim)
    if n_allowed == int(np.count_nonzero(cat.has_vector)):  # nothing left out
        return cat.vector_sum / n_allowed
    left_out = np.flatnonzero(cat.has_vector & ~allowed)
    if len(left_out) <= min(n_allowed, sample):
        total = cat.vector_sum - cat.vectors[left_out].sum(axis=0, dtype=np.float64)
        return total / n_allowed
    kept = np.flatnonzero(allowed)
    if len(kept) > sample:
        kept = kept[:: math.ceil(len(kept) / sample)]
    return cat.vectors[kept].mean(axis=0, dtype=np.float64)


def _rescale(cosines: np.ndarray, mean: float, top: float) -> np.ndarray:
    """As :func:`recsys.search.fusion.normalise_dense`, with the mean and the best given."""
    return (cosines - np.float32(mean)) / np.float32(max(top - mean, 1e-6))


def dense_scale(cat: Catalogue, query: np.ndarray, allowed: np.ndarray, dense: DenseCandidates,
                cfg: SearchConfig) -> tuple[float, float]:
    """``(mean, best)`` cosine over the allowed rows (exact when ``dense`` is exhaustive)."""
    if not len(dense.rows):
        return 0.0, 0.0
    if dense.exhaustive:
        return float(dense.cosines.mean()), float(dense.cosines.max())
    mean = float(allowed_mean(cat, allowed, cfg.mean_sample) @ query.astype(np.float64))
    return mean, float(dense.cosines.max())


def linear_top(cat: Catalogue, index: Any, query: np.ndarray, parts: Parts, allowed: np.ndarray, k: int,
               cfg: SearchConfig) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best allowed rows by ``parts`` plus the rescaled cosine: ``(rows, scores)``, best first,
    ties by row."""
    want = max(cfg.dense_candidates, 2 * k)
    dense = dense_candidates(cat, index, query, allowed, want, cfg)
    mean, best = dense_scale(cat, query, allowed, dense, cfg)
    rows, cos = dense.rows, dense.cosines
    partial = None if dense.exhaustive else parts.partial(len(allowed))
    if partial is not None:  # P: the best allowed rows by the partial score
        if parts.personal is None:  # partial >= 0: only rows with a lexical or attribute match take part
            mask = allowed & (partial > 0)
            count = int(np.count_nonzero(mask))
            p_rows, p_scores = top_k(partial, min(want, count), mask) if count else (rows[:0], cos[:0])
            p_floor = p_scores[-1] if count > want else np.float32(0)
        else:
            p_rows, p_scores = top_k(partial, want, allowed)
            p_floor = p_scores[-1] if len(p_rows) == want else -np.inf
        rows, cos = _merge(cat, query, rows, cos, p_rows)
        scores = parts.score(rows, _rescale(cos, mean, best))
        kth = np.sort(scores)[-k] if len(scores) >= k else -np.inf
        floor = np.float32(parts.dense_weight) * _rescale(np.float32(dense.cosines.min()), mean, best)
        if p_floor + floor > kth - SLACK:  # rows in neither list might still reach the k-th score
            extra = np.flatnonzero(allowed & (partial + floor > kth - SLACK))
            extra = np.setdiff1d(extra, rows, assume_unique=True)
            if len(extra) > cfg.max_extra:
                extra = extra[np.argpartition(-partial[extra], cfg.max_extra - 1)[: cfg.max_extra]]
            rows, cos = _merge(cat, query, rows, cos, extra)
    scores = parts.score(rows, _rescale(cos, mean, best))
    pos, top = top_k(scores, min(k, len(rows))) if len(rows) else (np.zeros(0, np.int64), np.zeros(0, np.float32))
    return rows[pos], top


def _merge(cat: Catalogue, query: np.ndarray, rows: np.ndarray, cos: np.ndarray,
           more: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` (ascending) with ``more`` added, and the exact cosines of all of them, ascending by row."""
    new = np.setdiff1d(more, rows)
    if not len(new):
        return rows, cos
    all_rows = np.concatenate([rows, new])
    all_cos = np.concatenate([cos, (cat.vectors[new] @ query).astype(np.float32)])
    order = np.argsort(all_rows, kind="stable")
    return all_rows[order], all_cos[order]


def ranked_dense(cat: Catalogue, index: Any, query: np.ndarray, allowed: np.ndarray, depth: int,
                 cfg: SearchConfig) -> np.ndarray:
    """The ``depth`` best allowed rows by cosine, best first, ties by row (for RRF)."""
    dense = dense_candidates(cat, index, query, allowed, depth, cfg)
    if not len(dense.rows):
        return dense.rows
    pos, _ = top_k(dense.cosines, min(depth, len(dense.rows)))
    return dense.rows[pos]
