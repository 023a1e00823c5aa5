"""Items' category and attribute values as integer codes per column: filters, facets, query boosts.

A column is kept when its values are scalars (strings, numbers, booleans) with at most ``max_values``
distinct ones (free text such as descriptions is not an attribute). The category is the column
``category``. List values and columns with too many distinct values are left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from recsys.errors import QueryFieldError

CATEGORY = "category"
MAX_VALUE_CHARS = 80


@dataclass(frozen=True)
class Column:
    """One attribute column: ``codes`` ``(n,)`` int32 index into ``values`` (-1: no value)."""

    codes: np.ndarray
    values: tuple[str, ...]

    def code_of(self) -> dict[str, int]:
        return {v: i for i, v in enumerate(self.values)}


@dataclass(frozen=True)
class AttributeTable:
    """Per-column codes of ``n`` rows (row ``i`` = the search catalogue's row ``i``)."""

    columns: dict[str, Column]
    n: int

    @classmethod
    def build(cls, categories: Sequence[str | None], attributes: Sequence[Mapping[str, Any] | None],
              max_values: int = 1000) -> AttributeTable:
        """From each row's category and attribute dict."""
        n = len(categories)
        raw: dict[str, list[Any]] = {CATEGORY: list(categories)}
        for i, attrs in enumerate(attributes):
            for key, value in (attrs or {}).items():
                if key == CATEGORY:
                    continue
                column = raw.get(key)
                if column is None:
                    column = raw[key] = [None] * n
                column[i] = value
        columns = {}
        for name, vals in raw.items():
            col = _column(vals, max_values)
            if col is not None:
                columns[name] = col
        return cls(columns, n)

    def with_rows(self, rows: np.ndarray, categories: Sequence[str | None],
                  attributes: Sequence[Mapping[str, Any] | None], n: int) -> AttributeTable:
        """A copy with ``rows`` set from the given values (rows ``>= self.n`` appended; ``n`` rows after).
        Columns the new rows bring are not added until the next full build."""
        out = {}
        for name, col in self.columns.items():
            codes = np.full(n, -1, np.int32)
            codes[: self.n] = col.codes
            values = list(col.values)
            index = col.code_of()
            for r, cat, attrs in zip(np.asarray(rows).tolist(), categories, attributes):
                v = cat if name == CATEGORY else (attrs or {}).get(name)
                s = _scalar(v)
                if s is None:
                    codes[r] = -1
                    continue
                if s not in index:
                    index[s] = len(values)
                    values.append(s)
                codes[r] = index[s]
            out[name] = Column(codes, tuple(values))
        return AttributeTable(out, n)

    def mask(self, wanted: Mapping[str, Sequence[str]]) -> np.ndarray:
        """``(n,)`` bool: rows whose value of every named column is one of the wanted values.

        Raises:
            QueryFieldError: a column that is not an attribute (the message lists those there are).
        """
        keep = np.ones(self.n, dtype=bool)
        for name, values in wanted.items():
            col = self.columns.get(name)
            if col is None:
                raise QueryFieldError("filters.attributes", f"unknown attribute {name!r}; allowed: {sorted(self.columns)}")
            index = col.code_of()
            codes = [index[v] for v in values if v in index]
            keep &= np.isin(col.codes, np.asarray(codes, dtype=np.int32)) if codes else False
        return keep

    def counts(self, name: str, rows: np.ndarray, top: int) -> dict[str, int]:
        """The ``top`` most frequent values of column ``name`` among ``rows``, with their counts."""
        col = self.columns.get(name)
        if col is None:
            raise QueryFieldError("facets", f"unknown facet {name!r}; allowed: {sorted([*self.columns, 'price'])}")
        codes = col.codes[rows]
        codes = codes[codes >= 0]
        if not len(codes):
            return {}
        counts = np.bincount(codes, minlength=len(col.values))
        order = np.lexsort((np.arange(len(counts)), -counts))[:top]
        return {col.values[i]: int(counts[i]) for i in order if counts[i] > 0}


def _scalar(value: Any) -> str | None:
    if value is None or isinstance(value, (list, tuple, dict)):
        return None
    s = str(value).strip()
    return s if s and len(s) <= MAX_VALUE_CHARS else None


def _column(values: list[Any], max_values: int) -> Column | None:
    if any(isinstance(v, (list, tuple, dict)) for v in values):
        return None
    index: dict[str, int] = {}
    codes = np.full(len(values), -1, np.int32)
    for i, v in enumerate(values):
        s = _scalar(v)
        if s is None:
            continue
        c = index.get(s)
        if c is None:
            if len(index) >= max_values:
                return None
            c = index[s] = len(index)
        codes[i] = c
    if not index:
        return None
    return Column(codes, tuple(index))
