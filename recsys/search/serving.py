"""The serving runtime's search hooks (kept out of :mod:`recsys.serving.runtime`): ranking a request into
the service's answer, the lexical side buffer of incremental updates, and the lexical artifact's versions."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Engine

from recsys.config import Config
from recsys.search.engine import Catalogue, ProductSearch
from recsys.search.hybrid import SearchRequest, run_search
from recsys.search.settings import SearchConfig


@dataclass(frozen=True)
class SearchRanked:
    """A search answer: ``items`` (the service's ranked items), facet counts, how the query was read."""

    items: list[Any]
    facets: dict[str, dict[str, int]] = field(default_factory=dict)
    mode: str = "hybrid"
    corrected: str | None = None
    """The query after spelling correction, when a word was corrected."""
    understood: list[dict[str, Any]] = field(default_factory=list)
    """Attribute values recognised in the query: ``{"phrase", "attributes": {column: value}}``."""


def ranked_search(search: ProductSearch, request: SearchRequest, cfg: SearchConfig, personal: np.ndarray | None,
                  make_item: Callable[[int, float, list[dict[str, Any]]], Any],
                  prices: np.ndarray | None = None) -> SearchRanked:
    """:func:`run_search`, with each hit made by ``make_item(row, score, reasons)``."""
    res = run_search(search, request, cfg, personal, prices)
    reasons: list[dict[str, Any]] = [{"type": "query_match"}] + ([{"type": "personalised"}] if personal is not None else [])
    items = [make_item(int(r), float(s), reasons) for r, s in zip(res.rows, res.scores)]
    corrected, understood = None, []
    if res.parsed is not None and search.text_index is not None:
        corrected = res.parsed.corrected if res.parsed.corrections else None
        cols = search.text_index.attrs.columns
        understood = [{"phrase": m.phrase, "attributes": {c: cols[c].values[code] for c, code in m.options}}
                      for m in res.parsed.mentions]
    return SearchRanked(items, res.facets, res.mode, corrected, understood)


def with_text_rows(engine: Engine, search: ProductSearch, cat: Catalogue, rows: np.ndarray) -> ProductSearch:
    """A copy of ``search`` over ``cat`` whose text index has the catalogue ``rows`` (items updated: new, or with
    a changed text, category or attribute) read anew from the database into its side buffer; ``search`` itself
    when nothing changes."""
    if cat is search.catalogue and (search.text_index is None or not len(rows)):
        return search
    out = copy.copy(search)
    out.catalogue = cat
    text = search.text_index
    if text is not None and len(rows):
        from recsys.search.text_loader import read_item_texts

        got = read_item_texts(engine, [cat.ids[r] for r in rows])
        out.text_index = text.with_rows(rows, got.documents, got.categories, got.attributes, got.prices, len(cat))
    return out


def lexical_changed(engine: Engine, search: Any) -> bool:
    """Whether the registry's active lexical index differs from the one ``search`` serves."""
    from recsys.search.text_loader import LEXICAL_INDEX
    from recsys.store.artifacts import active_artifact

    text = getattr(search, "text_index", None)
    if text is None:
        return False
    rec = active_artifact(engine, f"index-{LEXICAL_INDEX}")
    return rec is not None and rec.version != text.version


def rebuild_lexical(engine: Engine, config: Config, search: ProductSearch) -> str | None:
    """Build and publish the lexical index of ``search``'s catalogue anew (side buffer folded in)."""
    if search.text_index is None:
        return None
    from recsys.search.text_loader import build_search_text

    return build_search_text(engine, config, search.catalogue.ids, force=True).version
