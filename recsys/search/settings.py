"""Configuration section ``search`` (see :mod:`recsys.config`). Pure pydantic, no heavy imports.

The fusion weights and the attribute boost were chosen on validation queries (``recsys evaluate-search --tune``
on ``--generate attributes --split val``: attribute, typo and known-item queries of a held-out part of H&M's
value combinations and items, disjoint from the reported test queries; best mean NDCG@10 over query types on the
grid lexical 0.5/1/2/4 x attribute 0.5/1/2/4, dense 1; see the README's "Product search").
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from recsys.settings_base import Section as _Section


class SearchConfig(_Section):
    mode: Literal["hybrid", "lexical", "semantic"] = "hybrid"
    """Default retrieval of ``POST /v1/search`` and ``recsys search`` (a request may pick another)."""
    fusion: Literal["linear", "rrf"] = "linear"
    """How hybrid mode fuses lexical and dense scores: a weighted sum of normalised scores, or reciprocal rank."""
    lexical_weight: float = Field(4.0, ge=0)
    """Linear fusion: weight of BM25 divided by the query's best BM25."""
    dense_weight: float = Field(1.0, ge=0)
    """Linear fusion: weight of the cosine, rescaled so the catalogue mean is 0 and the best item 1."""
    attribute_weight: float = Field(2.0, ge=0)
    """Boost of an item holding every category / attribute value named in the query (part of them: that share)."""
    personal_weight: float = Field(0.05, ge=0)
    """Weight of the user's standardised feed score when a request names a ``user_id``."""
    rrf_k: int = Field(60, gt=0)
    rrf_candidates: int = Field(1000, gt=0)
    """RRF: the best this many of each list take part."""
    bm25_k1: float = Field(1.2, gt=0)
    bm25_b: float = Field(0.75, ge=0, le=1)
    spell_max_edit: int = Field(2, ge=0, le=3)
    """Largest spelling correction of a query word absent from the catalogue (0: none)."""
    spell_min_word_len: int = Field(4, gt=0)
    max_attribute_values: int = Field(1000, gt=0)
    """An attribute column with more distinct values is free text: not recognised, filtered or counted."""
    facet_depth: int = Field(1000, gt=0)
    """Facet counts of a query with no lexical match (image or purely semantic) cover its best this many items."""
    facet_size: int = Field(20, gt=0)
    """Values returned per facet (the most frequent)."""
    price_buckets: tuple[float, ...] = (10.0, 25.0, 50.0, 100.0, 250.0)
    """Upper bounds of the price facet's buckets (the last bucket is open-ended)."""

    # --- large catalogues: dense scores over candidates (recsys.search.candidates)
    exact_max_items: int = Field(20_000, ge=0)
    """The service ranks catalogues of at most this many items with an exact scan of every item's cosine; larger
    ones get an ANN index (``index-search``, published like the other indexes) and the candidate path."""
    dense_candidates: int = Field(500, gt=0)
    """Candidate path: the best this many allowed items of the index, and as many by the other signals."""
    exact_allowed_below: int = Field(20_000, ge=0)
    """Candidate path: a filter allowing at most this many items is scanned exactly (cheaper, and exact)."""
    filter_overfetch: float = Field(1.5, ge=1)
    """Candidate path: with a filter keeping a share ``f`` of the items, fetch ``dense_candidates / f`` x this."""
    max_fetch: int = Field(5_000, gt=0)
    """Candidate path: a filter that would need more rows fetched from the index scans the allowed items exactly."""
    max_extra: int = Field(20_000, gt=0)
    """Candidate path: rows outside both candidate lists that might still reach the top k, scored exactly (at most)."""
    mean_sample: int = Field(100_000, gt=0)
    """Candidate path: the allowed items' mean vector is exact when a filter leaves out (or keeps) at most this many
    items, else estimated from a strided sample of this many."""
