"""Query understanding from the catalogue's own vocabulary: spelling correction and attribute mentions.

- **Spelling.** A query word that no item holds (and of at least ``min_word_len`` letters) is replaced by
  the closest catalogue word within ``max_edit`` Damerau-Levenshtein edits, the most frequent one on ties
  (`symspellpy <https://github.com/mammothb/symspellpy>`_: the symmetric-delete dictionary answers in
  microseconds at any vocabulary size, where a scan with an edit-distance library grows with the
  vocabulary). ``blak dress`` -> ``black dress``, ``trousres`` -> ``trousers``.
- **Mentions.** Phrases of the (corrected) query that equal a value of a category / attribute column
  (compared by stemmed words, longest phrase first, so ``dark blue`` is one mention and not ``blue``) become
  :class:`Mention` s: the ranker boosts items that hold them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from recsys.search.attributes import AttributeTable
from recsys.search.text import MAX_QUERY_WORDS, stem_all, words

MAX_PHRASE_WORDS = 5


@dataclass(frozen=True)
class Mention:
    """A phrase of the query naming attribute values: ``options`` are ``(column, code)`` pairs (one phrase
    can be a value of several columns, e.g. a product type that is also a garment group)."""

    phrase: str
    options: tuple[tuple[str, int], ...]

    def satisfied(self, attrs: AttributeTable) -> np.ndarray:
        """``(n,)`` bool: rows holding any of the options."""
        out = None
        for column, code in self.options:
            hit = attrs.columns[column].codes == code
            out = hit if out is None else np.logical_or(out, hit, out=out)
        return out if out is not None else np.zeros(attrs.n, dtype=bool)


@dataclass(frozen=True)
class ParsedQuery:
    text: str
    """The query as given."""
    corrected: str
    """The query's words after spelling correction, space-separated."""
    tokens: tuple[str, ...]
    """Stemmed words of ``corrected`` (what the lexical index is asked)."""
    mentions: tuple[Mention, ...]
    corrections: dict[str, str]
    """Word as typed -> the catalogue word used instead."""


class QueryParser:
    """Spelling dictionary and value phrases of one catalogue.

    Args:
        word_counts: catalogue word -> documents holding it (from the lexical index).
        attrs: the catalogue's attribute columns (their values are the phrases recognised).
        max_edit: largest correction (0: no spelling correction).
        min_word_len: shorter words are never corrected.
    """

    def __init__(self, word_counts: Mapping[str, int], attrs: AttributeTable, *, max_edit: int = 2,
                 min_word_len: int = 4, _spell: Any = None, extra_words: frozenset[str] = frozenset()) -> None:
        self.word_counts = word_counts
        self.extra_words = extra_words
        """Words of items added since the dictionary was built: never corrected (not suggested either)."""
        self.max_edit = max_edit
        self.min_word_len = min_word_len
        self._spell = _spell if _spell is not None else _symspell(word_counts, max_edit) if max_edit > 0 else None
        self._phrases: dict[tuple[str, ...], list[tuple[str, int]]] = {}
        for column, col in attrs.columns.items():
            for code, value in enumerate(col.values):
                key = tuple(stem_all(words(value)))
                if key and len(key) <= MAX_PHRASE_WORDS and len("".join(key)) >= 3 and not "".join(key).isdigit():
                    self._phrases.setdefault(key, []).append((column, code))

    def updated(self, new_words: set[str], attrs: AttributeTable) -> QueryParser:
        """This parser for a catalogue with more items: their words are known (never corrected) and the
        values of ``attrs`` recognised; the spelling dictionary is shared, not rebuilt."""
        return QueryParser(self.word_counts, attrs, max_edit=self.max_edit, min_word_len=self.min_word_len,
                           _spell=self._spell, extra_words=self.extra_words | frozenset(new_words))

    def correct(self, word: str) -> str:
        """``word`` itself when the catalogue holds it (or it is short, or a number), else the best correction."""
        if self._spell is None or word in self.word_counts or word in self.extra_words \
                or len(word) < self.min_word_len or word.isdigit():
            return word
        from symspellpy import Verbosity

        hits = self._spell.lookup(word, Verbosity.TOP, max_edit_distance=self.max_edit, transfer_casing=False)
        return hits[0].term if hits else word

    def parse(self, text: str) -> ParsedQuery:
        raw = words(text)[:MAX_QUERY_WORDS]
        fixed = [self.correct(w) for w in raw]
        corrections = {w: f for w, f in zip(raw, fixed) if w != f}
        stems = stem_all(fixed)
        return ParsedQuery(text, " ".join(fixed), tuple(stems), tuple(self._mentions(fixed, stems)), corrections)

    def _mentions(self, fixed: list[str], stems: list[str]) -> list[Mention]:
        out: list[Mention] = []
        i = 0
        while i < len(stems):
            for size in range(min(MAX_PHRASE_WORDS, len(stems) - i), 0, -1):
                options = self._phrases.get(tuple(stems[i : i + size]))
                if options:
                    out.append(Mention(" ".join(fixed[i : i + size]), tuple(options)))
                    i += size
                    break
            else:
                i += 1
        return out


def _symspell(word_counts: Mapping[str, int], max_edit: int) -> Any:
    from symspellpy import SymSpell

    spell = SymSpell(max_dictionary_edit_distance=max_edit, prefix_length=7)
    for w, c in word_counts.items():
        if not w.isdigit():
            spell.create_dictionary_entry(w, int(c))
    return spell
