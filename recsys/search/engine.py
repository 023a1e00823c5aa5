"""Exact product search over catalogue vectors (numpy brute force).

The pure core: a :class:`Catalogue` (external ids, titles, categories, availability and one
``(n, d)`` matrix of unit vectors in the joint text–image space), :class:`SearchFilters`, and
:class:`ProductSearch`, which turns a text and/or an image query into a joint-space vector with the
encoding functions it is given and returns the top-``k`` items by cosine. Where the functions come from
(encoders + alignment heads) is wired in :mod:`recsys.search.loader`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsys.align.model import l2_normalize
from recsys.errors import QueryFieldError, UnknownIdError

QueryEncoder = Callable[[Sequence[Any]], np.ndarray]
"""A batch of queries (texts, or RGB PIL images) → ``(n, d)`` float32 unit vectors in the catalogue's space."""


@dataclass(frozen=True)
class SearchFilters:
    """Which items may be returned.

    Attributes:
        categories: keep items whose category is one of these (``None``: any category).
        available_only: drop items marked unavailable.
        exclude: external ids never returned (e.g. the query item itself).
    """

    categories: tuple[str, ...] | None = None
    available_only: bool = True
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class Hit:
    item_id: str
    """External id."""
    title: str
    category: str | None
    score: float
    """Cosine similarity to the query, in ``[-1, 1]``."""


@dataclass(frozen=True)
class Catalogue:
    """Searchable items (row ``i`` of every field is item ``i``).

    Attributes:
        ids: external ids, ``n`` unique strings.
        titles: ``n`` titles.
        categories: ``n`` categories (``None`` where unknown).
        available: ``(n,)`` bool.
        vectors: ``(n, d)`` float32, L2-normalised (all-zero rows never match).
        space: what the vectors are (an alignment version, or an encoder version), for messages.
    """

    ids: tuple[str, ...]
    titles: tuple[str, ...]
    categories: tuple[str | None, ...]
    available: np.ndarray
    vectors: np.ndarray
    space: str = ""
    _row: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.ids)
        if not (len(self.titles) == len(self.categories) == n):
            raise ValueError(f"ids, titles and categories must have the same length, got {n}, "
                             f"{len(self.titles)}, {len(self.categories)}")
        if self.vectors.ndim != 2 or self.vectors.shape[0] != n or self.available.shape != (n,):
            raise ValueError(f"vectors must be ({n}, d) and available ({n},), got {self.vectors.shape} and "
                             f"{self.available.shape}")
        row = {item: i for i, item in enumerate(self.ids)}
        if len(row) != n:
            raise ValueError("catalogue ids must be unique")
        object.__setattr__(self, "_row", row)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def empty(cls, dim: int, space: str = "") -> Catalogue:
        return cls((), (), (), np.zeros(0, dtype=bool), np.zeros((0, dim), dtype=np.float32), space=space)

    def with_rows(self, other: Catalogue) -> tuple[Catalogue, np.ndarray]:
        """This catalogue with ``other``'s items upserted: rows of known ids replaced in place, new ids
        appended in ``other``'s order. Returns the new catalogue (``self`` when nothing differs) and the
        rows that changed: new, or a different vector, title, category or availability."""
        if not len(other):
            return self, np.zeros(0, dtype=np.int64)
        if other.dim != self.dim:
            raise ValueError(f"cannot merge {other.dim}-d rows into a {self.dim}-d catalogue")
        ids, titles, cats = list(self.ids), list(self.titles), list(self.categories)
        taken, rows = [], []
        n = len(ids)
        for j, item in enumerate(other.ids):
            r = self._row.get(item)
            if r is None:
                r = n
                n += 1
                ids.append(item)
                titles.append(other.titles[j])
                cats.append(other.categories[j])
            elif (titles[r], cats[r], bool(self.available[r])) == (other.titles[j], other.categories[j],
                                                                    bool(other.available[j])) \
                    and np.allclose(self.vectors[r], other.vectors[j], rtol=0, atol=1e-5):
                # the same item read again (a projection computed in another batch differs in the last bits)
                continue
            else:
                titles[r], cats[r] = other.titles[j], other.categories[j]
            taken.append(j)
            rows.append(r)
        if not rows:
            return self, np.zeros(0, dtype=np.int64)
        rows, taken = np.asarray(rows, dtype=np.int64), np.asarray(taken, dtype=np.int64)
        other = Catalogue(tuple(other.ids[j] for j in taken), tuple(other.titles[j] for j in taken),
                          tuple(other.categories[j] for j in taken), other.available[taken], other.vectors[taken])
        vectors = np.empty((n, self.dim), dtype=np.float32)
        vectors[: len(self)] = self.vectors
        vectors[rows] = other.vectors
        available = np.empty(n, dtype=bool)
        available[: len(self)] = self.available
        available[rows] = other.available
        merged = Catalogue(tuple(ids), tuple(titles), tuple(cats), available, vectors, space=self.space)
        return merged, rows

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def row(self, item_id: str) -> int:
        """Row of an external id; :class:`UnknownIdError` if it is not in the catalogue."""
        try:
            return self._row[item_id]
        except KeyError:
            raise UnknownIdError(f"unknown item id {item_id!r}") from None

    @property
    def has_vector(self) -> np.ndarray:
        """``(n,)`` bool: rows whose vector is not all zero (computed once; do not modify)."""
        cached = self.__dict__.get("_has_vector")
        if cached is None:
            cached = np.abs(self.vectors).sum(axis=1) > 0
            object.__setattr__(self, "_has_vector", cached)
        return cached

    @property
    def vector_sum(self) -> np.ndarray:
        """``(d,)`` float64 sum of every row (computed once; do not modify): the mean of the allowed rows
        without a scan (:func:`recsys.search.candidates.allowed_mean`)."""
        cached = self.__dict__.get("_vector_sum")
        if cached is None:
            cached = self.vectors.sum(axis=0, dtype=np.float64)
            object.__setattr__(self, "_vector_sum", cached)
        return cached

    def mask(self, filters: SearchFilters | None) -> np.ndarray:
        """``(n,)`` bool: the items ``filters`` allow (and that have a vector)."""
        keep = self.has_vector.copy()
        if filters is None:
            return keep
        if filters.available_only:
            keep &= self.available.astype(bool)
        if filters.categories is not None:
            allowed = set(filters.categories)
            keep &= np.fromiter((c in allowed for c in self.categories), bool, len(self))
        for item in filters.exclude:
            if item in self._row:
                keep[self._row[item]] = False
        return keep


def top_k(scores: np.ndarray, k: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of ``(n,)`` scores among rows where ``mask`` is true.

    Returns:
        ``(rows, scores)``, each ``(min(k, allowed),)``, best first; ties broken by row number.
    """
    if k <= 0:
        raise ValueError(f"k must be > 0, got {k}")
    scores = np.asarray(scores, dtype=np.float32)
    allowed = np.arange(len(scores)) if mask is None else np.flatnonzero(mask)
    s = scores[allowed]
    if len(s) > k:
        part = np.argpartition(-s, k - 1)[:k]
    else:
        part = np.arange(len(s))
    order = part[np.lexsort((allowed[part], -s[part]))]
    return allowed[order], s[order]


class ProductSearch:
    """Text, image, or text+image search over a :class:`Catalogue`.

    Args:
        catalogue: the items and their joint-space vectors.
        encode_text: texts → ``(n, d)`` unit vectors in the catalogue's space (``None``: no text queries).
        encode_image: RGB images → ``(n, d)`` unit vectors in the same space (``None``: no image queries).
        text_weight / image_weight: how a text+image query combines its two vectors.
    """

    def __init__(
        self,
        catalogue: Catalogue,
        encode_text: QueryEncoder | None = None,
        encode_image: QueryEncoder | None = None,
        text_weight: float = 0.5,
        image_weight: float = 0.5,
    ) -> None:
        if text_weight < 0 or image_weight < 0 or text_weight + image_weight <= 0:
            raise ValueError(f"weights must be >= 0 and not both 0, got text {text_weight}, image {image_weight}")
        self.catalogue = catalogue
        self.rows_loader: Callable[[np.ndarray], Catalogue] | None = None
        """Set by :func:`recsys.search.loader.build_product_search`: the catalogue rows of some internal item
        ids, read from the database the same way (incremental updates)."""
        self.encode_text = encode_text
        self.encode_image = encode_image
        self.dense_index: Any = None
        """An ANN :class:`~recsys.index.base.Retriever` over ``catalogue.vectors`` (same rows): hybrid and semantic
        search compute cosines for a candidate set only (:mod:`recsys.search.candidates`); ``None``: an exact
        scan of every row (catalogues of at most ``search.exact_max_items``)."""
        self.text_index: Any = None
        """The items' words, attributes and prices (:class:`recsys.search.hybrid.SearchText`): lexical and
        hybrid search, attribute filters and facets; ``None``: dense search only."""
        self.text_weight = text_weight
        self.image_weight = image_weight

    def query_vector(self, text: str | None = None, image: Any | None = None) -> np.ndarray:
        """The ``(d,)`` unit query vector for a text, an image (RGB PIL image), or both.

        Raises:
            ValueError: neither given, or a kind of query this search cannot encode.
        """
        if text is None and image is None:
            raise ValueError("give a text, an image, or both")
        parts: list[tuple[float, np.ndarray]] = []
        if text is not None:
            if not text.strip():
                raise QueryFieldError("text", "the text query is empty (nothing but white space); give words or leave it out")
            if self.encode_text is None:
                raise ValueError("this search has no text encoder")
            parts.append((self.text_weight, self._encode(self.encode_text, text)))
        if image is not None:
            if self.encode_image is None:
                raise ValueError(
                    f"this search cannot take image queries: the catalogue space {self.catalogue.space!r} "
                    "has no image projection (train an alignment with `recsys train-align`)"
                )
            parts.append((self.image_weight, self._encode(self.encode_image, image)))
        if len(parts) == 1:
            return parts[0][1]
        return l2_normalize(sum(w * v for w, v in parts)[None, :])[0]

    def _encode(self, fn: QueryEncoder, query: Any) -> np.ndarray:
        vec = np.asarray(fn([query]), dtype=np.float32)
        if vec.shape != (1, self.catalogue.dim):
            raise ValueError(f"query encoder returned shape {vec.shape}, the catalogue expects (1, {self.catalogue.dim})")
        return l2_normalize(vec)[0]

    def search(
        self,
        text: str | None = None,
        image: Any | None = None,
        k: int = 10,
        filters: SearchFilters | None = None,
    ) -> list[Hit]:
        """The ``k`` best items for the query (fewer if the filters leave fewer), best first."""
        return self.search_vector(self.query_vector(text, image), k, filters)

    def search_vector(self, query: np.ndarray, k: int = 10, filters: SearchFilters | None = None) -> list[Hit]:
        """Search with a ready ``(d,)`` joint-space vector (``filters=None``: the default :class:`SearchFilters`)."""
        filters = filters if filters is not None else SearchFilters()
        query = np.asarray(query, dtype=np.float32)
        if query.shape != (self.catalogue.dim,):
            raise ValueError(f"query vector must be ({self.catalogue.dim},), got {query.shape}")
        cat = self.catalogue
        rows, scores = top_k(cat.vectors @ query, k, cat.mask(filters))
        return [Hit(cat.ids[r], cat.titles[r], cat.categories[r], float(s)) for r, s in zip(rows, scores)]
