"""Configuration section ``index`` (see :mod:`recsys.config`). Pure pydantic, no heavy imports.

ScaNN parameters are chosen from the catalogue size (:func:`recsys.index.scann.choose_params`):

* ``n < brute_force_below``: ScaNN brute force (exact, float32);
* ``brute_force_below <= n < partition_above``: asymmetric hashing (AH) over every row, then exact
  reordering of the best ``reorder`` candidates;
* ``n >= partition_above``: k-means partitioning into ``num_leaves`` leaves (default ``sqrt(n)``),
  AH within the ``leaves_to_search`` nearest leaves, then exact reordering.

Every derived value can be pinned here; ``None`` means "derive from the size".
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from recsys.settings_base import Section as _Section


class IndexConfig(_Section):
    backend: Literal["auto", "scann", "exact"] = "auto"
    """``auto``: ScaNN when importable, else exact search with a warning."""
    recall_sample: int = Field(200, gt=0)
    """Queries sampled (seeded) at build time to measure recall@``recall_k`` against exact search."""
    recall_k: int = Field(10, gt=0)
    recall_warn_below: float = Field(0.9, ge=0, le=1)
    """Log a warning when the build-time recall is lower (raise ``leaves_to_search`` / ``reorder``)."""
    seed: int = 0

    # --- ScaNN regime by catalogue size
    mode: Literal["auto", "brute_force", "ah", "tree_ah"] = "auto"
    """``auto`` picks by size with the two thresholds below."""
    brute_force_below: int = Field(20_000, ge=0)
    partition_above: int = Field(100_000, ge=0)

    # --- ScaNN parameters (None: derived from n)
    num_leaves: int | None = Field(None, gt=0)
    """Partitions; default ``round(sqrt(n))``."""
    leaves_to_search: int | None = Field(None, gt=0)
    """Default ``max(min_leaves_to_search, round(leaves_fraction * num_leaves))``, at most ``num_leaves``."""
    leaves_fraction: float = Field(0.03, gt=0, le=1)
    min_leaves_to_search: int = Field(16, gt=0)
    reorder: int = Field(250, gt=0)
    """Candidates rescored exactly after AH (``pre_reorder_num_neighbors``) for small ``k``."""
    reorder_per_result: float = Field(5.0, ge=1)
    """For larger fetches (big ``k``, filtered queries) rescore ``reorder_per_result`` x the rows
    fetched, if more than ``reorder``: ranks deep in the list need a wider AH shortlist."""
    max_reorder: int = Field(5_000, gt=0)
    """Upper bound of the rescored shortlist (never below the rows fetched)."""
    dims_per_block: int = Field(2, gt=0)
    anisotropic_threshold: float = 0.2
    """AH anisotropic quantisation threshold (ScaNN's recommendation for inner product: 0.2)."""
    hash_type: Literal["lut16", "lut256"] = "lut16"
    training_sample: int = Field(250_000, gt=0)
    """Rows sampled to train the partitioner and the AH codebooks (at most ``n``)."""
    spherical: bool = True
    """Spherical k-means for the partitioner (right for L2-normalised rows: on 1M clustered synthetic
    rows, 32 of 1,000 leaves, it lifted recall@10 from 0.92 to 0.97; benchmarks/bench_index.py)."""
    training_threads: int = Field(0, ge=0)
    """Threads for ScaNN training; 0 = all cores."""
    search_threads: int = Field(1, ge=1)
    """Threads for a batch of queries; 1 searches batches in the calling thread."""

    # --- Filtered search
    filter_overfetch: float = Field(2.0, ge=1)
    """With an allow mask keeping a fraction ``f`` of rows, ScaNN fetches ``k / f * filter_overfetch``."""
    filter_max_fetch: int = Field(1_000, gt=0)
    """Above this many candidates to fetch, filtered queries go straight to exact search on the allowed rows."""
    filter_exact_below: int = Field(2_000, ge=0)
    """Masks allowing at most this many rows are searched exactly on those rows (no ScaNN)."""

    # --- Exact search
    exact_chunk_elements: int = Field(32_000_000, gt=0)
    """Batched exact search computes at most this many scores at once (queries x rows, 4 bytes each)."""

    # --- Side buffer
    max_buffered: int = Field(5_000, ge=0)
    """A published index whose catalogue grew or changed in at most this many rows is updated through its
    side buffer (new and changed rows, scanned exactly at query time) and republished, without a rebuild;
    more, and it is rebuilt. 0 = always rebuild."""
    max_buffered_fraction: float = Field(0.05, ge=0, le=1)
    """... and in at most this fraction of its rows (a new model changes every row: rebuild)."""
    buffer_warn: int = Field(50_000, gt=0)
    """Log a warning (once per retriever) when more vectors than this were added since the build."""
