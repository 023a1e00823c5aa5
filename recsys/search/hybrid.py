"""One ranking for ``recsys search``, ``POST /v1/search`` and the evaluation: lexical + dense + attributes.

:class:`SearchText` is what search knows of the items' words, aligned with the search catalogue's rows:
the BM25 index (:mod:`recsys.search.lexical`), the category / attribute codes
(:mod:`recsys.search.attributes`), prices, and the query parser built from them (:mod:`recsys.search.query`).
:func:`run_search` ranks one :class:`SearchRequest`:

- ``semantic``: the cosine of the query's joint-space vector (text, image or both) with every item, the
  query as typed (the dense search of old);
- ``lexical``: BM25 of the (spelling-corrected) query words;
- ``hybrid`` (default): both fused (``search.fusion``: a weighted sum of normalised scores or RRF), the
  dense vector of the spelling-corrected text.

Lexical and hybrid add ``search.attribute_weight`` times the share of the query's attribute mentions an
item holds (``understand=False`` turns spelling and mentions off: the plain peers of the evaluation); every
mode adds the caller's personal scores (``search.personal_weight``). A request without text (an image
alone) is semantic.

The cosine is computed for every row (one matrix-vector product) unless the search has a dense index
(``ProductSearch.dense_index``, catalogues above ``search.exact_max_items`` in the service): then hybrid and
semantic ranking compute it for a candidate set only (:mod:`recsys.search.candidates`), and RRF takes its dense
list from the index; lexical scores, attribute shares, filters and facets stay ``(n,)`` arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.search.attributes import CATEGORY, AttributeTable
from recsys.search.facets import facet_counts
from recsys.search.candidates import Parts, linear_top, ranked_dense
from recsys.search.fusion import (
    linear_fusion,
    normalise_dense,
    normalise_lexical,
    ranked_rows,
    rrf_ranked,
)
from recsys.search.lexical import LexicalIndex
from recsys.search.query import ParsedQuery, QueryParser
from recsys.search.settings import SearchConfig
from recsys.search.text import tokenize, words

if TYPE_CHECKING:
    from recsys.search.engine import ProductSearch

MODES = ("hybrid", "lexical", "semantic")


@dataclass(frozen=True)
class SearchText:
    """Words, attribute codes and prices of the search catalogue's ``n`` rows."""

    lexical: LexicalIndex
    attrs: AttributeTable
    prices: np.ndarray
    """``(n,)`` float64, NaN where unknown."""
    parser: QueryParser
    version: str | None = None
    """The published lexical index version (``None``: built in memory, not published)."""

    @classmethod
    def build(cls, lexical: LexicalIndex, categories: Sequence[str | None],
              attributes: Sequence[Mapping[str, Any] | None], prices: np.ndarray, cfg: SearchConfig,
              version: str | None = None) -> SearchText:
        attrs = AttributeTable.build(categories, attributes, cfg.max_attribute_values)
        parser = QueryParser(lexical.word_counts, attrs, max_edit=cfg.spell_max_edit,
                             min_word_len=cfg.spell_min_word_len)
        return cls(lexical, attrs, np.asarray(prices, dtype=np.float64), parser, version)

    def with_rows(self, rows: np.ndarray, documents: Sequence[str], categories: Sequence[str | None],
                  attributes: Sequence[Mapping[str, Any] | None], prices: Sequence[float | None], n: int) -> SearchText:
        """A copy with ``rows`` replaced or appended (the catalogue has ``n`` rows now); the lexical index takes
        them into its side buffer; their words are never corrected and their attribute values are recognised
        (the spelling dictionary itself stays that of the published index)."""
        new_prices = np.full(n, np.nan, np.float64)
        new_prices[: len(self.prices)] = self.prices
        for r, p in zip(np.asarray(rows).tolist(), prices):
            new_prices[r] = np.nan if p is None else float(p)
        attrs = self.attrs.with_rows(rows, categories, attributes, n)
        parser = self.parser.updated({w for d in documents for w in words(d)}, attrs)
        return SearchText(self.lexical.with_documents(rows, documents, n), attrs, new_prices, parser, self.version)


@dataclass(frozen=True)
class SearchRequest:
    """One query. ``attributes``: ``{column: [values]}`` filters (an item must hold one value of each)."""

    text: str | None = None
    image: Any = None
    k: int = 10
    mode: str | None = None
    """``hybrid``, ``lexical`` or ``semantic``; ``None``: ``search.mode``."""
    categories: tuple[str, ...] | None = None
    attributes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    price_min: float | None = None
    price_max: float | None = None
    available_only: bool = True
    exclude: tuple[str, ...] = ()
    facets: tuple[str, ...] = ()
    text_weight: float = 0.5
    """Share of the text vector when both a text and an image are given."""
    understand: bool = True
    """Spelling correction and attribute boosts (off: the plain lexical / dense / RRF peers)."""
    fusion: str | None = None
    """``linear`` or ``rrf``; ``None``: ``search.fusion``."""


@dataclass(frozen=True)
class SearchResult:
    rows: np.ndarray
    """``(m,)`` int64 catalogue rows, best first (``m <= k``)."""
    scores: np.ndarray
    """``(m,)`` float32."""
    facets: dict[str, dict[str, int]]
    parsed: ParsedQuery | None
    mode: str


def query_vector(search: ProductSearch, request: SearchRequest) -> np.ndarray:
    """The ``(d,)`` unit joint-space vector of the request's text and / or image."""
    if request.image is None:
        return search.query_vector(text=request.text)
    if request.text is None:
        return search.query_vector(image=request.image)
    t = search.query_vector(text=request.text)
    i = search.query_vector(image=request.image)
    q = request.text_weight * t + (1.0 - request.text_weight) * i
    return (q / max(float(np.linalg.norm(q)), 1e-12)).astype(np.float32)


def allowed_rows(search: ProductSearch, request: SearchRequest, prices: np.ndarray | None = None) -> np.ndarray:
    """``(n,)`` bool: rows the request's filters allow.

    Raises:
        ValueError: an attribute filter on a column that is not an attribute.
    """
    from recsys.search.engine import SearchFilters

    st = search.text_index
    by_codes = st is not None and request.categories is not None and CATEGORY in st.attrs.columns
    categories = None if by_codes else request.categories
    allowed = search.catalogue.mask(SearchFilters(categories, request.available_only, request.exclude))
    if by_codes:  # integer codes instead of comparing every item's category string
        allowed &= st.attrs.mask({CATEGORY: list(request.categories or ())})
    if request.attributes:
        if st is None:
            raise ValueError("attribute filters need the lexical index (none is loaded)")
        allowed &= st.attrs.mask(request.attributes)
    if request.price_min is not None or request.price_max is not None:
        if prices is None:
            prices = st.prices if st is not None else np.full(len(allowed), np.nan)
        ok = ~np.isnan(prices)
        if request.price_min is not None:
            ok &= prices >= request.price_min
        if request.price_max is not None:
            ok &= prices <= request.price_max
        allowed &= ok
    return allowed


def run_search(search: ProductSearch, request: SearchRequest, cfg: SearchConfig,
               personal: np.ndarray | None = None, prices: np.ndarray | None = None) -> SearchResult:
    """Rank the catalogue for ``request``; ``personal``: ``(n,)`` standardised user scores, or ``None``;
    ``prices``: ``(n,)`` prices fresher than ``search.text_index.prices`` (the service's, which price-only
    updates reach), or ``None``.

    Raises:
        ValueError: an unknown mode, facet or attribute; a query this search cannot encode.
    """
    mode = request.mode or cfg.mode
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    st = search.text_index
    if request.text is None or st is None:
        if mode == "lexical":
            raise ValueError("lexical search needs a text query" if request.text is None else
                             "lexical search needs the lexical index (none is loaded)")
        mode = "semantic"
    allowed = allowed_rows(search, request, prices)
    parsed = None
    if request.text is not None and st is not None and mode != "semantic":
        parsed = st.parser.parse(request.text) if request.understand else ParsedQuery(
            request.text, request.text, tuple(tokenize(request.text)), (), {})
    lex = st.lexical.scores(parsed.tokens) if parsed is not None and mode != "semantic" else None
    q = None
    if mode != "lexical":
        q = query_vector(search, request if parsed is None else _corrected(request, parsed))
    share = None
    if parsed is not None and parsed.mentions and cfg.attribute_weight > 0:
        share = parsed.mentions[0].satisfied(st.attrs).astype(np.float32)
        for m in parsed.mentions[1:]:
            share += m.satisfied(st.attrs)
        if len(parsed.mentions) > 1:
            share /= len(parsed.mentions)
    fusion = request.fusion or cfg.fusion
    if mode == "hybrid" and fusion not in ("linear", "rrf"):
        raise ValueError(f"fusion must be 'linear' or 'rrf', got {fusion!r}")
    depth = max(request.k, cfg.facet_depth) if request.facets else request.k
    scores = None
    if q is not None and search.dense_index is not None and not (mode == "hybrid" and fusion == "rrf"):
        lexical = lex if mode == "hybrid" else None
        parts = Parts(lexical, float(lexical.max()) if lexical is not None and len(lexical) else 0.0, cfg.lexical_weight,
                      cfg.dense_weight, share, cfg.attribute_weight, personal, cfg.personal_weight)
        ranked, ranked_scores = linear_top(search.catalogue, search.dense_index, q, parts, allowed, depth, cfg)
    else:
        scores = _fuse(search, q, lex, allowed, mode, fusion, cfg)
        if share is not None:
            scores = scores + np.float32(cfg.attribute_weight) * share
        if personal is not None:
            scores = scores + np.float32(cfg.personal_weight) * personal.astype(np.float32)
    matching = None  # lexical matches and items holding every mention: lexical mode's rows, facets' set
    if lex is not None and (mode == "lexical" or request.facets):
        matching = allowed & (lex > 0)
        if share is not None:
            matching |= allowed & (share >= 1.0)
    if mode == "lexical":
        allowed = matching if matching is not None else allowed
    if scores is not None:
        rows, top = _top(scores, request.k, allowed)
    else:
        rows, top = ranked[: request.k], ranked_scores[: request.k]
    facets = {}
    if request.facets:
        if st is None:
            raise ValueError("facets need the lexical index (none is loaded)")
        if matching is not None and matching.any():
            pool = np.flatnonzero(matching)
        else:
            pool = _top(scores, cfg.facet_depth, allowed)[0] if scores is not None else ranked[: cfg.facet_depth]
        facets = facet_counts(request.facets, pool, st.attrs, st.prices if prices is None else prices,
                              cfg.price_buckets, cfg.facet_size)
    return SearchResult(rows, top, facets, parsed, mode)


def _corrected(request: SearchRequest, parsed: ParsedQuery) -> SearchRequest:
    """The request with its text spelling-corrected (the dense encoder does not know the typos either)."""
    if not parsed.corrections:
        return request
    from dataclasses import replace

    return replace(request, text=parsed.corrected)


def _fuse(search: ProductSearch, q: np.ndarray | None, lex: np.ndarray | None, allowed: np.ndarray, mode: str,
          fusion: str, cfg: SearchConfig) -> np.ndarray:
    """``(n,)`` float32 scores of every row: the full-array path (and RRF, whose dense list alone comes from the
    index when there is one)."""
    if mode == "lexical" or q is None:
        return normalise_lexical(lex) if lex is not None else np.zeros(len(allowed), np.float32)
    index = search.dense_index
    if mode == "semantic" or lex is None:
        return normalise_dense(search.catalogue.vectors @ q, allowed).astype(np.float32)
    if fusion == "rrf":
        depth = cfg.rrf_candidates
        dense = ranked_dense(search.catalogue, index, q, allowed, depth, cfg) if index is not None else \
            ranked_rows(search.catalogue.vectors @ q, allowed, depth)
        return rrf_ranked([ranked_rows(lex, allowed & (lex > 0), depth), dense], len(allowed), cfg.rrf_k) \
            * np.float32(cfg.rrf_k)
    return linear_fusion(lex, search.catalogue.vectors @ q, allowed, cfg.lexical_weight, cfg.dense_weight)


def _top(scores: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from recsys.search.engine import top_k

    if not allowed.any():
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    return top_k(scores, k, allowed)
