"""Query sets: the file format, generated attribute / typo / known-item queries, the metrics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from recsys.errors import InputFormatError
from recsys.evaluation.query_sets import (
    generate_queries,
    load_queries,
    typo,
    typo_query,
)
from recsys.evaluation.search_eval import query_metrics

COLUMNS = ["colour_group_name", "product_type_name", "index_group_name"]


def _items(path: Path, n: int = 300) -> Path:
    rng = np.random.default_rng(3)
    colours, types, groups = ["Black", "Dark Blue", "White", "Red"], ["Trousers", "Vest top", "Dress"], ["Ladieswear", "Menswear"]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["article_id", "prod_name", *COLUMNS])
        for i in range(n):
            w.writerow([f"{i:06d}", f"Product number{i % 50} thing", colours[rng.integers(4)], types[rng.integers(3)],
                        groups[rng.integers(2)]])
    return path


def _osa(a: str, b: str) -> int:
    """Optimal string alignment distance (the oracle)."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def test_typos_are_one_edit_per_long_word() -> None:
    rng = np.random.default_rng(0)
    for word in ["trousers", "black", "ladieswear"] * 30:
        t = typo(word, rng)
        assert t != word and _osa(word, t) == 1
    out = typo_query("dark blue vest top trousers", rng).split()
    assert out[:4] == ["dark", "blue", "vest", "top"] and _osa(out[4], "trousers") == 1


def test_generated_queries_are_seeded_disjoint_and_relevant_by_every_attribute(tmp_path: Path) -> None:
    items = _items(tmp_path / "items.csv")
    rows = list(csv.DictReader(items.open()))
    test = generate_queries(items, COLUMNS, split="test", per_type=5, known_items=10)
    assert test == generate_queries(items, COLUMNS, split="test", per_type=5, known_items=10)
    val = generate_queries(items, COLUMNS, split="validation", per_type=5, known_items=10)
    types = {q.type for q in test}
    assert types == {"colour_group+product_type", "index_group+product_type", "colour_group+index_group+product_type",
                     "colour_group+product_type+typo", "index_group+product_type+typo",
                     "colour_group+index_group+product_type+typo", "known-item+typo"}
    clean = [q for q in test if "typo" not in q.type]
    assert not {q.text for q in clean} & {q.text for q in val if "typo" not in q.type}
    order = {"colour_group+product_type": ["colour_group_name", "product_type_name"],
             "index_group+product_type": ["index_group_name", "product_type_name"],
             "colour_group+index_group+product_type": ["colour_group_name", "index_group_name", "product_type_name"]}
    for q in clean:  # the text names the values (anchor last); relevant = every item holding all of them
        want = {r["article_id"] for r in rows if " ".join(r[c].lower() for c in order[q.type]) == q.text}
        assert want and set(q.relevant) == want and all(g == 1.0 for g in q.relevant.values())
    known = [q for q in test if q.type == "known-item+typo"]
    assert len(known) == 10 and all(max(q.relevant.values()) == 2.0 for q in known)


def test_query_file_round_trip_and_errors(tmp_path: Path) -> None:
    items = _items(tmp_path / "items.csv")
    qs = generate_queries(items, COLUMNS, per_type=3, known_items=2)
    path = tmp_path / "q.jsonl"
    path.write_text("".join(q.to_json() + "\n" for q in qs))
    assert load_queries(path) == qs
    path.write_text(json.dumps({"query": "x", "relevant": {}}) + "\n")
    with pytest.raises(InputFormatError, match=r"q.jsonl:1: .*positive grade"):
        load_queries(path)
    path.write_text('{"query": "x", "relevant": {"a": 1}}\nnot json\n')
    with pytest.raises(InputFormatError, match="q.jsonl:2"):
        load_queries(path)
    with pytest.raises(InputFormatError, match="missing column"):
        generate_queries(items, ["colour_group_name", "size"])


def test_metrics_against_hand_computed_values() -> None:
    nd, p, mrr = query_metrics(["a", "x", "b"], {"a": 1.0, "b": 1.0})
    ideal = 1 + 1 / np.log2(3)
    assert nd == pytest.approx((1 + 1 / np.log2(4)) / ideal) and p == pytest.approx(0.2) and mrr == 1.0
    nd, p, mrr = query_metrics(["x", "y", "b"], {"a": 2.0, "b": 1.0})
    assert nd == pytest.approx((1 / np.log2(4)) / (2 + 1 / np.log2(3))) and mrr == pytest.approx(1 / 3)
    assert query_metrics(["x"], {"a": 1.0}) == (0.0, 0.0, 0.0)


def test_one_run_evaluates_the_default_and_its_peers_per_query_type() -> None:
    from recsys.evaluation.query_sets import Query
    from recsys.evaluation.search_eval import evaluate_queries, format_table, to_json
    from recsys.search.settings import SearchConfig
    from tests.test_hybrid_search import _search

    qs = [Query("red star mug", {"m2": 2.0, "m1": 1.0}, "known"), Query("blak trousres", {"t1": 1.0}, "typo"),
          Query("dark blue", {"t2": 1.0, "v1": 1.0}, "attr"), Query("nothing here", {"zz": 1.0}, "attr")]
    ev = evaluate_queries(_search(), qs, SearchConfig())
    assert ev.systems == ["default", "lexical", "dense", "rrf"] and ev.types == ["attr", "known", "typo", "all"]
    assert ev.skipped == 1 and ev.rows[("default", "all")][3] == 3
    assert ev.ndcg("default", "typo") == 1.0 and ev.ndcg("lexical", "typo") == 0.0  # spelling helps only the default
    assert ev.ndcg("default", "attr") == 1.0
    table = format_table(ev)
    assert table.count("\n") == 5 and "| typo | 1 |" in table
    assert to_json(ev)["results"]["rrf"]["known"]["n"] == 1
