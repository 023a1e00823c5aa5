"""The candidate path of large catalogues (:mod:`recsys.search.candidates`) against the full-array path.

Oracles: with candidate lists covering the catalogue the candidate path returns exactly what the old
full-array path returns; with an exact index and short lists, the threshold check still finds the exact top
k; with a ScaNN index on a clustered catalogue, recall@10 of the candidate path against the exact one is
bounded below (every mode and a few filters).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest

from recsys.index.factory import build_index
from recsys.index.settings import IndexConfig
from recsys.index.synthetic import clustered_vectors
from recsys.search.candidates import allowed_mean
from recsys.search.engine import Catalogue, ProductSearch
from recsys.search.hybrid import SearchRequest, SearchText, run_search
from recsys.search.lexical import LexicalIndex
from recsys.search.settings import SearchConfig
from recsys.search.text import item_document

COLOURS = ["black", "white", "dark blue", "red", "green", "beige", "grey", "pink"]
TYPES = ["trousers", "dress", "vest top", "sweater", "shorts", "skirt", "jacket", "hoodie", "socks", "coat"]
GROUPS = ["ladieswear", "menswear", "divided", "sport"]


def _world(n: int, dim: int, seed: int = 0) -> ProductSearch:
    """``n`` items with titles from the vocabularies above, attributes, prices and clustered vectors; the
    query encoder maps a text to a noisy copy of one item's vector (a pure function of the text)."""
    rng = np.random.default_rng(seed)
    vectors = clustered_vectors(n, dim, seed=seed)
    c, t, g = (rng.integers(len(x), size=n) for x in (COLOURS, TYPES, GROUPS))
    filler = rng.integers(300, size=(n, 3))
    titles = [f"{COLOURS[c[i]]} {TYPES[t[i]]} w{filler[i, 0]}x" for i in range(n)]
    cats = [TYPES[t[i]].title() for i in range(n)]
    attrs = [{"colour": COLOURS[c[i]].title(), "group": GROUPS[g[i]].title()} for i in range(n)]
    docs = [item_document(titles[i], f"w{filler[i, 1]}x w{filler[i, 2]}x", cats[i], attrs[i]) for i in range(n)]
    available = rng.random(n) > 0.05
    cat = Catalogue(tuple(f"i{i}" for i in range(n)), tuple(titles), tuple(cats), available, vectors)

    def encode(batch: list[str]) -> np.ndarray:
        out = []
        for text in batch:
            h = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            r = np.random.default_rng(h)
            v = vectors[h % n] + 0.3 * r.normal(size=dim) / np.sqrt(dim)
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, np.float32)

    search = ProductSearch(cat, encode)
    search.text_index = SearchText.build(LexicalIndex.build(docs), cats, attrs, np.round(rng.uniform(5, 100, n), 2),
                                         SearchConfig())
    return search


def _queries(n: int, seed: int = 1) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        words = [COLOURS[rng.integers(len(COLOURS))], TYPES[rng.integers(len(TYPES))]]
        if i % 3 == 1:
            words.insert(0, GROUPS[rng.integers(len(GROUPS))])
        if i % 4 == 3:
            words.append(f"w{rng.integers(300)}x")
        out.append(" ".join(words))
    return out


REQUESTS: list[dict[str, Any]] = [
    {"mode": "hybrid"},
    {"mode": "hybrid", "fusion": "rrf"},
    {"mode": "semantic"},
    {"mode": "lexical"},
    {"mode": "hybrid", "price_max": 40.0},
    {"mode": "semantic", "categories": ("Dress", "Coat")},
    {"mode": "hybrid", "attributes": {"group": ["Menswear"]}, "available_only": False},
    {"mode": "hybrid", "exclude": ("i3", "i7"), "understand": False},
    {"mode": "hybrid", "facets": ("colour", "price")},
]


def _with_index(search: ProductSearch, index: Any) -> ProductSearch:
    out = ProductSearch(search.catalogue, search.encode_text)
    out.text_index = search.text_index
    out.dense_index = index
    return out


def _run(search: ProductSearch, text: str, extra: dict[str, Any], cfg: SearchConfig,
         personal: np.ndarray | None = None) -> Any:
    return run_search(search, SearchRequest(text=text, k=10, **extra), cfg, personal)


@pytest.fixture(scope="module")
def small() -> ProductSearch:
    return _world(600, 16)


def test_lists_covering_the_catalogue_give_exactly_the_full_array_answer(small: ProductSearch) -> None:
    n = len(small.catalogue)
    cfg = SearchConfig(dense_candidates=n, exact_allowed_below=0)
    fast = _with_index(small, build_index(small.catalogue.vectors, IndexConfig(backend="exact")))
    personal = np.random.default_rng(3).normal(size=n).astype(np.float32)
    for text in _queries(12):
        for extra in REQUESTS:
            for pers in (None, personal):
                want = _run(small, text, extra, cfg, pers)
                got = _run(fast, text, extra, cfg, pers)
                assert got.rows.tolist() == want.rows.tolist(), (text, extra)
                # the same sums; a dot product of gathered rows may round its last bit differently
                np.testing.assert_allclose(got.scores, want.scores, rtol=1e-6, atol=1e-6)
                assert got.facets == want.facets


def test_short_lists_of_an_exact_index_still_find_the_exact_top_k(small: ProductSearch) -> None:
    # 25 candidates of 600 rows: the threshold check must bring in every row that can still reach the top 10
    cfg = SearchConfig(dense_candidates=25, exact_allowed_below=0, mean_sample=10_000)
    fast = _with_index(small, build_index(small.catalogue.vectors, IndexConfig(backend="exact")))
    personal = np.random.default_rng(4).normal(size=len(small.catalogue)).astype(np.float32)
    checked = 0
    for text in _queries(15):
        for extra in REQUESTS[:5]:
            for pers in (None, personal):
                want = _run(small, text, extra, cfg, pers)
                got = _run(fast, text, extra, cfg, pers)
                assert got.rows.tolist() == want.rows.tolist(), (text, extra)
                np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-5)
                checked += 1
    assert checked == 150


def test_allowed_mean_is_exact_or_a_close_sample(small: ProductSearch) -> None:
    cat = small.catalogue
    rng = np.random.default_rng(0)
    for share in (0.02, 0.5, 0.98):
        allowed = cat.has_vector & (rng.random(len(cat)) < share)
        want = cat.vectors[allowed].mean(axis=0, dtype=np.float64)
        np.testing.assert_allclose(allowed_mean(cat, allowed, sample=10_000), want, atol=1e-9)
        approx = allowed_mean(cat, allowed, sample=50)  # both sides larger than the sample: strided sample
        assert np.abs(approx - want).max() < 0.2
    assert np.all(allowed_mean(cat, np.zeros(len(cat), bool), 10) == 0)


class _Counting:
    """An index that counts the searches asked of it."""

    def __init__(self, index: Any) -> None:
        self.index = index
        self.calls = 0

    def search(self, query: np.ndarray, k: int, **kw: Any) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        return self.index.search(query, k, **kw)


@pytest.mark.slow
def test_scann_candidates_keep_recall_of_the_exact_path() -> None:
    search = _world(30_000, 32, seed=5)
    index = _Counting(build_index(search.catalogue.vectors, IndexConfig(backend="scann")))
    assert index.index.backend == "scann"
    fast = _with_index(search, index)
    cfg = SearchConfig(dense_candidates=100, exact_allowed_below=0)
    recalls: dict[str, list[float]] = {}
    for text in _queries(40, seed=9):
        for extra in REQUESTS[:7]:
            want = _run(search, text, extra, cfg)
            got = _run(fast, text, extra, cfg)
            key = ",".join(f"{k}={v}" for k, v in extra.items())
            recalls.setdefault(key, []).append(len(set(got.rows.tolist()) & set(want.rows.tolist())) / max(len(want.rows), 1))
    means = {k: round(float(np.mean(v)), 4) for k, v in recalls.items()}
    assert min(means.values()) >= 0.95, means
    # the index answered the unfiltered and the price-filtered queries (the category filter keeps 20%: an exact scan
    # of the allowed rows would be no slower, and lexical mode needs no cosine at all)
    assert index.calls >= 40 * 4, index.calls
