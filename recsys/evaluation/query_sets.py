"""Search query sets: the file format, and generated attribute / typo / known-item queries.

**Format** (JSON Lines, one query per line)::

    {"query": "black trousers", "relevant": {"0111565001": 1, "0111586001": 1}, "type": "colour+type"}

``query``: the text; ``relevant``: item id -> grade (a positive number; 1 for binary relevance); ``type``
(optional, default ``"all"``): what kind of query, for per-type results.

**Generated attribute queries** (:func:`generate_queries`) from named columns of an items file, e.g.
``colour_group_name, product_type_name, index_group_name``: the second column is the anchor (the product
type); the query types are each other column with it (``colour+type``, ``group+type``) and all of them
together. A query is the lower-cased values, the anchor last (``"black trousers"``, ``"ladieswear black
trousers"``); an item is relevant (grade 1) when it holds every value the query names. The distinct value
combinations of each type are split at random (``seed``) into a **validation** part and a **test** part, so
settings chosen on validation queries never see a reported query. Each query also gets a **typo** variant
(one random edit -- deletion, insertion, substitution or swap of neighbours -- in every word of at least 5
letters; type ``<type>+typo``), and **known-item** queries are item titles with one such edit in one word
(the item grade 2, other items of the same title grade 1; items split into validation / test likewise).
"""

from __future__ import annotations

import csv
import json
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.errors import InputFormatError

SPLITS = ("test", "validation")
MIN_TYPO_LEN = 5


@dataclass(frozen=True)
class Query:
    text: str
    relevant: dict[str, float]
    type: str = "all"

    def to_json(self) -> str:
        return json.dumps({"query": self.text, "relevant": self.relevant, "type": self.type}, ensure_ascii=False)


def load_queries(path: str | Path) -> list[Query]:
    """Read a query set (see the module docstring).

    Raises:
        InputFormatError: unreadable file, or a malformed line (named by its number).
    """
    path = Path(path)
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputFormatError(f"cannot read {path}: {exc.strerror or exc}") from exc
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            text, rel, qtype = obj["query"], obj["relevant"], obj.get("type", "all")
            if not isinstance(text, str) or not text.strip() or not isinstance(rel, dict) or not isinstance(qtype, str):
                raise ValueError("'query' must be a non-empty string, 'relevant' an object, 'type' a string")
            grades = {str(k): float(v) for k, v in rel.items()}
            if not grades or any(g <= 0 for g in grades.values()):
                raise ValueError("'relevant' needs at least one item id with a positive grade")
        except (ValueError, KeyError, TypeError) as exc:
            raise InputFormatError(f"{path}:{no}: {exc}; expected "
                                   '{"query": TEXT, "relevant": {ITEM_ID: GRADE, ...}, "type": TYPE}') from None
        out.append(Query(text, grades, qtype))
    if not out:
        raise InputFormatError(f"{path}: no queries")
    return out


def typo(word: str, rng: np.random.Generator) -> str:
    """``word`` with one random edit (deletion, insertion, substitution, swap of neighbours); never ``word``."""
    letters = string.ascii_lowercase
    while True:
        op = int(rng.integers(4))
        i = int(rng.integers(len(word)))
        if op == 0:
            out = word[:i] + word[i + 1 :]
        elif op == 1:
            out = word[:i] + letters[int(rng.integers(26))] + word[i:]
        elif op == 2:
            out = word[:i] + letters[int(rng.integers(26))] + word[i + 1 :]
        else:
            i = min(i, len(word) - 2)
            out = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        if out != word:
            return out


def typo_query(text: str, rng: np.random.Generator) -> str:
    """One edit in every word of at least :data:`MIN_TYPO_LEN` letters."""
    return " ".join(typo(w, rng) if len(w) >= MIN_TYPO_LEN and w.isalpha() else w for w in text.split())


def _read_rows(path: Path, columns: Sequence[str], id_column: str) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise InputFormatError(f"cannot read {path}: {exc.strerror or exc}") from exc
    missing = [c for c in (id_column, *columns) if not rows or c not in rows[0]]
    if missing:
        raise InputFormatError(f"{path}: missing column(s) {missing}; found {list(rows[0]) if rows else []}")
    return rows


def _type_name(cols: Sequence[str]) -> str:
    return "+".join(c.removesuffix("_name") for c in cols)


def attribute_queries(rows: list[dict[str, str]], columns: Sequence[str], id_column: str, split: str,
                      seed: int, per_type: int, validation_fraction: float) -> list[Query]:
    """Attribute queries of one split (see the module docstring), at most ``per_type`` of each type."""
    anchor, others = columns[1], [c for i, c in enumerate(columns) if i != 1]
    kinds = [[o, anchor] for o in others] + ([[*others, anchor]] if len(others) > 1 else [])
    out = []
    for kind_no, cols in enumerate(kinds):
        holders: dict[tuple[str, ...], list[str]] = {}
        for r in rows:
            combo = tuple((r.get(c) or "").strip() for c in cols)
            if all(combo):
                holders.setdefault(combo, []).append(r[id_column])
        combos = sorted(holders)
        perm = np.random.default_rng(seed + 1000 * kind_no).permutation(len(combos))
        n_val = round(validation_fraction * len(combos))
        part = perm[:n_val] if split == "validation" else perm[n_val:]
        pick = np.random.default_rng(seed + 1000 * kind_no + 1).permutation(part)[:per_type]
        for p in pick:
            combo = combos[int(p)]
            out.append(Query(" ".join(v.lower() for v in combo), {i: 1.0 for i in holders[combo]}, _type_name(cols)))
    return out


def known_item_queries(rows: list[dict[str, str]], title_column: str, id_column: str, split: str, seed: int,
                       n: int, validation_fraction: float) -> list[Query]:
    """Titles with a typo in one word of at least 5 letters (items without one are skipped)."""
    by_title: dict[str, list[str]] = {}
    for r in rows:
        by_title.setdefault((r.get(title_column) or "").strip().lower(), []).append(r[id_column])
    perm = np.random.default_rng(seed + 7).permutation(len(rows))
    n_val = round(validation_fraction * len(rows))
    part = perm[:n_val] if split == "validation" else perm[n_val:]
    rng = np.random.default_rng(seed + 8)
    out = []
    for p in part:
        r = rows[int(p)]
        title = (r.get(title_column) or "").strip()
        ws = title.split()
        long = [i for i, w in enumerate(ws) if len(w) >= MIN_TYPO_LEN and w.isalpha()]
        if not long:
            continue
        i = long[int(rng.integers(len(long)))]
        ws[i] = typo(ws[i].lower(), rng)
        rel = {x: 1.0 for x in by_title[title.lower()]} | {r[id_column]: 2.0}
        out.append(Query(" ".join(ws), rel, "known-item+typo"))
        if len(out) == n:
            break
    return out


def generate_queries(items: str | Path, columns: Sequence[str], *, id_column: str = "article_id",
                     title_column: str | None = "prod_name", split: str = "test", seed: int = 0, per_type: int = 100,
                     known_items: int = 100, validation_fraction: float = 0.3) -> list[Query]:
    """Attribute queries, their typo variants and known-item queries of one ``split`` of an items file.

    Raises:
        InputFormatError: unreadable file, or a named column missing.
        ValueError: fewer than two columns, or an unknown split.
    """
    if len(columns) < 2:
        raise ValueError(f"name at least two columns (the second is the anchor, e.g. the product type), got {list(columns)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    rows = _read_rows(Path(items), [*columns, *([title_column] if title_column else [])], id_column)
    clean = attribute_queries(rows, columns, id_column, split, seed, per_type, validation_fraction)
    rng = np.random.default_rng(seed + 99)
    typos = [Query(typo_query(q.text, rng), q.relevant, f"{q.type}+typo") for q in clean]
    known = known_item_queries(rows, title_column, id_column, split, seed, known_items, validation_fraction) \
        if title_column and known_items else []
    return [*clean, *typos, *known]
