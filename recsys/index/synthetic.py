"""Synthetic embedding-like vectors for tests and benchmarks (no IO, numpy only).

Uniform noise on the sphere is a poor stand-in for real embeddings: in 128 dimensions every pair of
random unit vectors is nearly orthogonal, so nearest neighbours are barely nearer than anything else.
Text and image embeddings instead form clusters of very different sizes, share a common direction
(mean cosine between unrelated items of 0.1-0.3), spread their variance over few directions and
mix tight clusters (near-duplicates) with loose ones.
:func:`clustered_vectors` imitates that: a Gaussian mixture whose centres have a decaying spectrum
plus a shared offset, Zipf-like cluster sizes, isotropic noise of a per-cluster level around each
centre, then L2 normalisation. It is easier for an index than uniform noise and harder than
well-separated clusters; benchmarks should say which they used.
"""

from __future__ import annotations

import numpy as np


def clustered_vectors(
    n: int,
    dim: int = 128,
    *,
    n_clusters: int | None = None,
    noise: float = 0.8,
    shared: float = 0.4,
    seed: int = 0,
) -> np.ndarray:
    """Draw ``n`` unit vectors from a clustered Gaussian mixture.

    Args:
        n: number of vectors.
        dim: dimension.
        n_clusters: mixture components; default ``max(1, n // 500)`` (bounded to 4,000).
        noise: median norm of the within-cluster noise relative to the (unit) centre norm; each
            cluster's own level is drawn log-normally around it (tight and loose clusters).
        shared: weight of a direction common to every centre (anisotropy of real embedding spaces).
        seed: the draw is a pure function of the arguments.

    Returns:
        ``(n, dim)`` float32, each row L2-normalised.
    """
    rng = np.random.default_rng(seed)
    k = n_clusters if n_clusters is not None else int(min(4000, max(1, n // 500)))
    spectrum = 1.0 / np.sqrt(np.arange(1, dim + 1, dtype=np.float64))
    centres = rng.standard_normal((k, dim)) * spectrum
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    common = rng.standard_normal(dim)
    common /= np.linalg.norm(common)
    centres = centres + shared * common
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = 1.0 / np.arange(1, k + 1) ** 0.7
    weights = rng.permutation(weights / weights.sum())
    labels = rng.choice(k, size=n, p=weights)
    spread = noise * np.exp(0.35 * rng.standard_normal(k)) / np.sqrt(dim)
    out = np.empty((n, dim), dtype=np.float32)
    step = 200_000
    for start in range(0, n, step):
        lab = labels[start : start + step]
        pts = centres[lab] + rng.standard_normal((len(lab), dim)) * spread[lab, None]
        pts /= np.linalg.norm(pts, axis=1, keepdims=True)
        out[start : start + len(lab)] = pts
    return out


def split_queries(vectors: np.ndarray, n_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hold ``n_queries`` random rows out of ``vectors`` as queries.

    Returns:
        ``(database, queries)``: ``(n - n_queries, dim)`` and ``(n_queries, dim)`` float32.
    """
    rng = np.random.default_rng(seed)
    held = np.zeros(len(vectors), dtype=bool)
    held[rng.choice(len(vectors), size=min(n_queries, len(vectors)), replace=False)] = True
    return np.ascontiguousarray(vectors[~held]), np.ascontiguousarray(vectors[held])
