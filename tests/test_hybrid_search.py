"""Lexical index, query understanding, fusion, facets and the hybrid ranking (no database)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recsys.errors import QueryFieldError
from recsys.search.attributes import AttributeTable
from recsys.search.engine import Catalogue, ProductSearch
from recsys.search.facets import price_counts
from recsys.search.fusion import linear_fusion, rrf_fusion
from recsys.search.hybrid import SearchRequest, SearchText, run_search
from recsys.search.lexical import LexicalIndex
from recsys.search.query import QueryParser
from recsys.search.settings import SearchConfig
from recsys.search.text import item_document, tokenize

ITEMS = [
    # id, title, category, colour, group, price
    ("m1", "Green star mug", "mug", "Green", "Kitchen", 8.0),
    ("m2", "Red star mug", "mug", "Red", "Kitchen", 9.5),
    ("m3", "Red plain mug", "mug", "Red", "Kitchen", 12.0),
    ("t1", "Slim black trousers", "Trousers", "Black", "Ladieswear", 30.0),
    ("t2", "Wide navy trousers", "Trousers", "Dark Blue", "Menswear", 35.0),
    ("t3", "Chino trousers", "Trousers", "Beige", "Menswear", 40.0),
    ("d1", "Black party dress", "Dress", "Black", "Ladieswear", 60.0),
    ("d2", "Blue summer dress", "Dress", "Blue", "Ladieswear", None),
    ("v1", "Jersey vest top", "Vest top", "Dark Blue", "Ladieswear", 7.0),
    ("v2", "Rib vest top", "Vest top", "Blue", "Divided", 6.0),
]


def _search(vectors: np.ndarray | None = None, cfg: SearchConfig | None = None) -> ProductSearch:
    n = len(ITEMS)
    rng = np.random.default_rng(0)
    vec = vectors if vectors is not None else rng.normal(size=(n, 8)).astype(np.float32)
    vec = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    cat = Catalogue(tuple(i[0] for i in ITEMS), tuple(i[1] for i in ITEMS), tuple(i[2] for i in ITEMS),
                    np.ones(n, bool), vec.astype(np.float32))
    attrs = [{"colour": i[3], "group": i[4]} for i in ITEMS]
    docs = [item_document(i[1], "", i[2], a) for i, a in zip(ITEMS, attrs)]
    # the "dense" encoder: a query is the mean vector of the items whose title shares a word with it
    titles = [set(tokenize(i[1])) for i in ITEMS]

    def encode(batch: list[str]) -> np.ndarray:
        out = []
        for t in batch:
            w = np.array([len(set(tokenize(t)) & s) for s in titles], np.float32) + 1e-3
            out.append(w @ vec)
        return np.asarray(out, np.float32)

    s = ProductSearch(cat, encode)
    s.text_index = SearchText.build(LexicalIndex.build(docs), [i[2] for i in ITEMS], attrs,
                                    np.array([np.nan if i[5] is None else i[5] for i in ITEMS]), cfg or SearchConfig())
    return s


def _ids(s: ProductSearch, res: object) -> list[str]:
    return [s.catalogue.ids[r] for r in res.rows]  # type: ignore[attr-defined]


def test_lexical_scores_match_bm25_and_the_side_buffer_uses_the_same_formula(tmp_path: Path) -> None:
    docs = ["red star mug", "green star mug", "black trousers", "red red dress", "blue vest top"]
    ix = LexicalIndex.build(docs, k1=1.2, b=0.75)
    s = ix.scores(tokenize("red mug"))
    assert s.shape == (5,) and s[0] > s[1] > 0 and s[2] == 0 and s[3] > 0
    # a document re-added through the buffer at its own row scores as in the base matrix
    again = ix.with_documents(np.array([0, 3]), [docs[0], docs[3]], 5)
    np.testing.assert_allclose(again.scores(tokenize("red mug")), s, rtol=1e-5)
    # a new row is found by its words; a replaced row no longer by its old ones
    more = ix.with_documents(np.array([5, 2]), ["oak side table", "linen cushion"], 6)
    got = more.scores(tokenize("oak trousers"))
    assert got.shape == (6,) and got[5] > 0 and got[2] == 0
    assert ix.scores(tokenize("oak")).sum() == 0  # the original is untouched
    # saved and loaded memory-mapped, buffer included
    more.info["version"] = "v1"
    more.save(tmp_path / "lex")
    loaded = LexicalIndex.load(tmp_path / "lex")
    np.testing.assert_allclose(loaded.scores(tokenize("oak red mug trousers")), more.scores(tokenize("oak red mug trousers")))
    assert json.loads((tmp_path / "lex" / "manifest.json").read_text())["backend"] == "bm25s"


def test_spelling_and_multi_word_attribute_mentions() -> None:
    s = _search()
    parser = s.text_index.parser
    q = parser.parse("blak trousres")
    assert q.corrected == "black trousers" and q.corrections == {"blak": "black", "trousres": "trousers"}
    cols = s.text_index.attrs.columns
    named = [{(c, cols[c].values[v]) for c, v in m.options} for m in q.mentions]
    assert named == [{("colour", "Black")}, {("category", "Trousers")}]
    # "dark blue" is one value (not "blue"); "vest top" a multi-word category
    q = parser.parse("dark blue vest top")
    named = [{(c, cols[c].values[v]) for c, v in m.options} for m in q.mentions]
    assert named == [{("colour", "Dark Blue")}, {("category", "Vest top")}]
    assert parser.parse("red mug").corrections == {}  # known words are never "corrected"
    assert QueryParser({"black": 3}, s.text_index.attrs, max_edit=0).parse("blak").corrected == "blak"


def test_red_star_mug_ranks_the_red_one_first_in_every_mode() -> None:
    s = _search()
    for mode in ("hybrid", "lexical"):
        res = run_search(s, SearchRequest("red star mug", k=3, mode=mode), SearchConfig())
        assert _ids(s, res)[0] == "m2", mode
    lex = run_search(s, SearchRequest("red star mug", k=10, mode="lexical"), SearchConfig())
    assert set(_ids(s, lex)) == {"m1", "m2", "m3"}  # lexical returns matching items only
    sem = run_search(s, SearchRequest("red star mug", k=10, mode="semantic"), SearchConfig())
    assert len(sem.rows) == 10 and sem.mode == "semantic"


def test_attribute_boost_filters_typos_and_facets() -> None:
    s = _search()
    cfg = SearchConfig()
    res = run_search(s, SearchRequest("blak dress", k=2), cfg)
    assert _ids(s, res)[0] == "d1"
    res = run_search(s, SearchRequest("dark blue", k=10, attributes={"group": ["Menswear"]}), cfg)
    assert _ids(s, res)[0] == "t2" and set(_ids(s, res)) <= {"t2", "t3"}
    res = run_search(s, SearchRequest("trousers", k=10, facets=("colour", "price", "category")), cfg)
    assert set(_ids(s, res)[:3]) == {"t1", "t2", "t3"}
    assert res.facets["colour"] == {"Black": 1, "Dark Blue": 1, "Beige": 1}
    assert res.facets["price"] == {"25-50": 3} and res.facets["category"] == {"Trousers": 3}
    res = run_search(s, SearchRequest("top", k=10, price_max=6.5), cfg)
    assert _ids(s, res)[0] == "v2" and all(s.text_index.prices[r] <= 6.5 for r in res.rows)
    with pytest.raises(QueryFieldError, match="unknown attribute 'size'") as err:
        run_search(s, SearchRequest("x", attributes={"size": ["M"]}), cfg)
    assert err.value.field == "filters.attributes"
    with pytest.raises(QueryFieldError, match="unknown facet"):
        run_search(s, SearchRequest("mug", facets=("brand",)), cfg)
    with pytest.raises(ValueError, match="mode must be"):
        run_search(s, SearchRequest("mug", mode="fuzzy"), cfg)
    # the plain peers: no spelling correction, no boost
    plain = run_search(s, SearchRequest("blak dress", k=10, mode="lexical", understand=False), cfg)
    assert set(_ids(s, plain)) == {"d1", "d2"}


def test_incremental_rows_are_searchable_and_counted() -> None:
    s = _search()
    st = s.text_index
    n = len(ITEMS)
    new = st.with_rows(np.array([n, 0]), ["Oak side table", "Renamed thing"], ["Table", "mug"],
                       [{"colour": "Brown"}, {"colour": "Green"}], [99.0, None], n + 1)
    assert new.lexical.scores(tokenize("oak"))[n] > 0 and new.lexical.scores(tokenize("star"))[0] == 0
    assert new.attrs.columns["colour"].values[new.attrs.columns["colour"].codes[n]] == "Brown"
    assert new.prices[n] == 99.0 and np.isnan(new.prices[0])
    assert st.attrs.n == n and len(st.prices) == n  # the old one untouched
    # a new word is never "corrected" into an old one, and a new attribute value is recognised
    assert new.parser.parse("oak brown").corrections == {}
    assert [m.phrase for m in new.parser.parse("oak brown").mentions] == ["brown"]


def test_fusions_and_price_buckets() -> None:
    lex = np.array([0, 2, 1, 0], np.float32)
    dense = np.array([0.9, 0.1, 0.5, 0.2], np.float32)
    allowed = np.ones(4, bool)
    fused = linear_fusion(lex, dense, allowed, 1.0, 1.0)
    np.testing.assert_allclose(fused[1], 1.0 + (0.1 - 0.425) / (0.9 - 0.425), rtol=1e-5)
    rrf = rrf_fusion([(lex, True), (dense, False)], allowed, k=60)
    np.testing.assert_allclose(rrf, [1 / 61, 1 / 61 + 1 / 64, 1 / 62 + 1 / 62, 1 / 63], rtol=1e-5)
    prices = np.array([5.0, 10.0, 30.0, np.nan, 300.0])
    assert price_counts(prices, np.arange(5), (10.0, 25.0, 250.0)) == {"<10": 1, "10-25": 1, "25-250": 1, "250+": 1}


def test_attribute_table_keeps_low_cardinality_scalar_columns() -> None:
    t = AttributeTable.build(["a", "b", "a"], [{"x": "1", "free": "u"}, {"x": "2", "free": "v", "tags": ["p"]},
                                              {"free": "w", "tags": ["q"]}], max_values=2)
    assert set(t.columns) == {"category", "x"}  # "free" has 3 values > 2; "tags" holds lists
    assert t.mask({"x": ["1", "zzz"]}).tolist() == [True, False, False]
    assert t.counts("category", np.arange(3), 5) == {"a": 2, "b": 1}


def test_building_the_lexical_index_logs_at_the_applications_level(tmp_path: Path) -> None:
    """bm25s sets its own logger to DEBUG at import; the index puts it back under the root's level, so the
    CLI (WARNING by default) does not print "Building index from tokens"."""
    import logging

    ix = LexicalIndex.build(["red star mug", "green star mug"])
    ix.save(tmp_path / "lex")
    LexicalIndex.load(tmp_path / "lex")
    bm = logging.getLogger("bm25s")
    assert bm.level == logging.NOTSET
    assert not bm.isEnabledFor(logging.DEBUG) or logging.getLogger().isEnabledFor(logging.DEBUG)
