"""Pure building blocks of the per-user score: standardisation, content profiles and kernels, the blend.

Functions of numpy arrays and sparse matrices only; the hybrid's components (:mod:`recsys.ranking.hybrid`)
and the feed ranker (:mod:`recsys.ranking.ranker`) are built from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = [
    "BlendWeights",
    "BlockSimilarity",
    "HistorySimilarity",
    "affine_stats",
    "blend",
    "block_shares",
    "content_profiles",
    "kernel_one_user",
    "kernel_scores",
    "linear_user_side",
    "mix_blocks",
    "unit_rows",
    "z_affine",
    "z_from_sample",
    "zscore_rows",
]


MAX_GAMMA = 40.0
"""Largest kernel sharpness: ``exp(40 * (-1 - 1))`` is still a normal float32."""


def zscore_rows(scores: np.ndarray) -> np.ndarray:
    """Standardise each row to mean 0, standard deviation 1 (a constant row becomes all zeros).

    Args:
        scores: ``(n, m)`` float. Returns ``(n, m)`` float32.
    """
    s = np.asarray(scores, dtype=np.float32)
    mean = s.mean(axis=1, keepdims=True)
    std = s.std(axis=1, keepdims=True)
    return ((s - mean) / np.where(std > 1e-12, std, 1.0)).astype(np.float32)


def z_affine(values: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Standardise ``values`` rows with exact catalogue means / deviations (0 where the deviation is 0)."""
    inv = np.where(sd > 0, 1.0 / np.where(sd > 0, sd, 1.0), 0.0)
    return ((values - mean[:, None]) * inv[:, None]).astype(np.float32)


def z_from_sample(values: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """Standardise ``values`` rows with the mean / deviation of the matching ``sample`` rows."""
    mean = sample.mean(axis=1, keepdims=True)
    std = sample.std(axis=1, keepdims=True)
    return ((values - mean) / np.where(std > 1e-12, std, 1.0)).astype(np.float32)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), C-contiguous float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(np.where(norms > 0, x / np.maximum(norms, 1e-30), 0.0), dtype=np.float32)


def content_profiles(weights: sp.csr_matrix, content: np.ndarray) -> np.ndarray:
    """Each user's weighted mean of their items' content vectors, L2-normalised.

    Args:
        weights: ``(n_users, n_items)`` CSR of non-negative profile weights.
        content: ``(n_items, d)`` float32 item vectors.

    Returns:
        ``(n_users, d)`` float32; zero rows for users without items.
    """
    prof = np.asarray(weights @ content, dtype=np.float32)
    norms = np.linalg.norm(prof, axis=1, keepdims=True)
    return prof / np.maximum(norms, 1e-12)


def block_shares(n_blocks: int, mix: float) -> tuple[float, ...]:
    """Shares of the content blocks in the cosine: one block gets 1; two get ``(1 - mix, mix)``.

    Raises:
        ValueError: more than two blocks, or ``mix`` outside ``[0, 1]``.
    """
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"mix must be in [0, 1], got {mix!r}")
    if n_blocks == 1:
        return (1.0,)
    if n_blocks == 2:
        return (1.0 - mix, mix)
    raise ValueError(f"the hybrid takes one or two content blocks, got {n_blocks}")


def mix_blocks(blocks: Sequence[np.ndarray], shares: Sequence[float]) -> np.ndarray:
    """Concatenate L2-normalised blocks scaled by ``sqrt(share)``: the cosine of two rows becomes the
    share-weighted sum of the blocks' cosines. Returns ``(n_items, sum of dims)`` float32."""
    parts = [np.sqrt(np.float32(sh)) * b for b, sh in zip(blocks, shares) if sh > 0]
    return np.concatenate(parts, axis=1).astype(np.float32) if parts else np.zeros((blocks[0].shape[0], 1), np.float32)


@dataclass(frozen=True)
class HistorySimilarity:
    """Cosines of the items in some histories to every item, computed once and reused across settings.

    Attributes:
        items: ``(h,)`` int64 sorted item rows that appear in the histories.
        sim: ``(h, n_items)`` float32 cosines.
    """

    items: np.ndarray
    sim: np.ndarray

    @classmethod
    def build(cls, weights: sp.csr_matrix, content: np.ndarray) -> HistorySimilarity:
        used = np.unique(sp.csr_matrix(weights).indices)
        return cls(used, np.asarray(content[used] @ content.T, dtype=np.float32))


@dataclass
class BlockSimilarity:
    """Per-block :class:`HistorySimilarity` of some histories, mixed on demand (and cached per mix)."""

    blocks: list[HistorySimilarity]
    _mixed: dict[float, HistorySimilarity] = field(default_factory=dict)

    @classmethod
    def build(cls, weights: sp.csr_matrix, blocks: Sequence[np.ndarray]) -> BlockSimilarity:
        return cls([HistorySimilarity.build(weights, b) for b in blocks])

    def mixed(self, mix: float) -> HistorySimilarity:
        """The cosines of the blocks mixed with :func:`block_shares`."""
        if mix not in self._mixed:
            shares = block_shares(len(self.blocks), mix)
            sim = sum(np.float32(sh) * b.sim for sh, b in zip(shares, self.blocks) if sh > 0)
            self._mixed[mix] = HistorySimilarity(self.blocks[0].items, np.asarray(sim, dtype=np.float32))
        return self._mixed[mix]


def kernel_scores(
    weights: sp.csr_matrix,
    content: np.ndarray,
    gamma: float,
    chunk: int = 2048,
    similarity: HistorySimilarity | None = None,
) -> np.ndarray:
    """Soft nearest-neighbour similarity of every item to a user's history.

    With history weights normalised to ``w_j`` (sum 1) and cosines ``c_j = cos(i, j)``:
    ``s(u, i) = 1 + log(sum_j w_j * exp(gamma * (c_j - 1))) / gamma``, a log-sum-exp that runs from the
    weighted mean cosine (``gamma -> 0``; ``gamma = 0`` computes exactly that) to the largest cosine
    (``gamma -> inf``). It stays on the cosine scale for every ``gamma``, so scores made with different
    sharpness can be blended.

    Args:
        weights: ``(n_users, n_items)`` CSR of non-negative history weights.
        content: ``(n_items, d)`` float32, L2-normalised rows.
        gamma: sharpness in ``[0, 40]`` (larger values would underflow float32 for opposite vectors).
        chunk: history items per block (bounds memory at ``chunk * n_items`` floats).
        similarity: precomputed cosines covering every item in ``weights`` (then ``content`` is unused).

    Returns:
        ``(n_users, n_items)`` float32; rows of users without history are 0.
    """
    if not 0.0 <= gamma <= MAX_GAMMA:
        raise ValueError(f"gamma must be in [0, {MAX_GAMMA:g}], got {gamma!r}")
    weights = sp.csr_matrix(weights, dtype=np.float32)
    totals = np.asarray(weights.sum(axis=1)).ravel()
    weights = sp.diags(np.where(totals > 0, 1.0 / np.maximum(totals, 1e-30), 0.0).astype(np.float32)) @ weights
    csc = weights.tocsc()
    n_items = content.shape[0] if similarity is None else similarity.sim.shape[1]
    out = np.zeros((weights.shape[0], n_items), dtype=np.float32)
    used = np.unique(weights.indices) if similarity is None else similarity.items
    if similarity is not None and not np.isin(np.unique(weights.indices), used).all():
        raise ValueError("the precomputed similarity does not cover every history item")
    for start in range(0, used.shape[0], chunk):
        cols = used[start : start + chunk]
        sim = similarity.sim[start : start + chunk] if similarity is not None else content[cols] @ content.T
        if gamma > 0:
            sim = np.exp(np.float32(gamma) * (sim - np.float32(1.0)))
        out += np.asarray(csc[:, cols] @ sim, dtype=np.float32)
    if gamma > 0:
        has = totals > 0
        out[has] = 1.0 + np.log(np.maximum(out[has], np.float32(1e-30))) / np.float32(gamma)
        out[~has] = 0.0
    return out


def kernel_one_user(w: np.ndarray, sim: np.ndarray, gamma: float) -> np.ndarray:
    """:func:`kernel_scores` for one user whose history cosines are given."""
    wn = (w / max(float(w.sum()), 1e-30)).astype(np.float32)
    if gamma > 0:
        out = wn @ np.exp(np.float32(gamma) * (sim - np.float32(1.0)))
        return (1.0 + np.log(np.maximum(out, np.float32(1e-30))) / np.float32(gamma))[None, :].astype(np.float32)
    return (wn @ sim)[None, :].astype(np.float32)


@dataclass(frozen=True)
class BlendWeights:
    """Weights of the three standardised components: CF score, content similarity, popularity."""

    cf: float = 1.0
    content: float = 0.0
    pop: float = 0.0


def blend(
    cf: np.ndarray | None,
    content: np.ndarray | None,
    pop: np.ndarray | None,
    weights: BlendWeights,
    cf_scale: np.ndarray | None = None,
) -> np.ndarray:
    """``cf_scale * w.cf * cf + w.content * content + w.pop * pop`` over standardised components.

    Args:
        cf, content: ``(n_users, n_items)`` standardised scores or ``None`` (left out).
        pop: ``(n_items,)`` standardised popularity or ``None``.
        cf_scale: optional ``(n_users,)`` per-user factor on the CF weight (sparse users lean on content).

    Returns:
        ``(n_users, n_items)`` float32.
    """
    shape = cf.shape if cf is not None else content.shape if content is not None else None
    if shape is None:
        raise ValueError("blend needs a CF or a content component")
    out = np.zeros(shape, dtype=np.float32)
    if cf is not None and weights.cf:
        scale = np.float32(weights.cf) if cf_scale is None else (weights.cf * cf_scale)[:, None].astype(np.float32)
        out += scale * cf
    if content is not None and weights.content:
        out += np.float32(weights.content) * content
    if pop is not None and weights.pop:
        out += np.float32(weights.pop) * pop[None, :]
    return out


def affine_stats(q: np.ndarray, mean: np.ndarray, gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Catalogue mean and deviation of ``q @ x_i`` per user from the items' mean and Gram matrix."""
    q64 = np.asarray(q, dtype=np.float64)
    m = q64 @ mean
    var = np.sum((q64 @ gram) * q64, axis=1) - m * m
    sd = np.sqrt(np.maximum(var, 0.0))
    return m, np.where(sd > 1e-12 * np.maximum(np.abs(m), 1.0), sd, 0.0)


def linear_user_side(weights: Any, side: Any, uvec: np.ndarray, scale: np.ndarray, inv_cf: np.ndarray,
                     cf_m: np.ndarray, factor: float, offset: float) -> np.ndarray:
    """``(B, k + d + 2)`` user coefficients of one half of the feed ranker's linear form (the item rows
    ``[F_i, C_i, pop_i, 1]`` are :meth:`recsys.ranking.ranker.FeedRanker._item_side`)."""
    a = weights.cf * scale * inv_cf
    parts = [a[:, None] * uvec]
    const = -a * cf_m
    if side is not None:
        _x, prof, c_m, inv_c = side
        b = weights.content * inv_c if weights.content else np.zeros_like(inv_c)
        parts.append(b[:, None] * prof)
        const = const - b * c_m
    n = uvec.shape[0]
    parts.append(np.full((n, 1), weights.pop))
    parts.append((const * factor + offset)[:, None] / max(factor, 1e-30))
    return (np.float32(factor) * np.concatenate(parts, axis=1)).astype(np.float32)
