"""The searchable text of an item and the one tokenizer that documents and queries share.

A document is the item's title, description, category and attribute values (strings and numbers, lists
flattened). Tokens are lower-case runs of letters and digits, stemmed with the Snowball English stemmer
(PyStemmer) so that ``dress`` finds ``dresses``; :func:`words` gives the unstemmed words (what the
spelling dictionary holds).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
MAX_QUERY_WORDS = 32
"""Words of a query beyond this many are ignored (bounded work per request)."""


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


def words(text: str) -> list[str]:
    """Lower-case words of ``text`` (letters and digits; everything else separates)."""
    return _WORD.findall(text.lower())


def stem_all(ws: list[str]) -> list[str]:
    """Stems of ``ws`` (same length and order)."""
    return list(_stemmer().stemWords(ws)) if ws else []


def tokenize(text: str) -> list[str]:
    """The index tokens of ``text``: stemmed :func:`words`."""
    return stem_all(words(text))


def _flatten(value: Any) -> Iterable[str]:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, (str, int, float)):
        yield str(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _flatten(v)


def item_document(title: str | None, description: str | None, category: str | None,
                  attributes: Mapping[str, Any] | None) -> str:
    """The text an item is found by: title, description, category and attribute values, one per line."""
    parts = [title or "", description or "", category or ""]
    for value in (attributes or {}).values():
        parts.extend(_flatten(value))
    return "\n".join(p for p in parts if p)
