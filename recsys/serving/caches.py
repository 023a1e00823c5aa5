"""Per-process answer caches bounded in bytes.

A cache whose keys come from requests (``GET /v1/items/<id>/similar?k=...&exclude=...``) grows with every
distinct question; counted in entries its memory depends on how large the answers are (about 200 KB at
``k=500``), so anyone could grow a worker by hundreds of megabytes without a key. :class:`AnswerCache`
counts the estimated bytes of each answer *and* its key, and evicts the least recently used entries
beyond ``max_bytes`` (``service.similar_cache_bytes``).

The LRU bookkeeping is :class:`cachetools.LRUCache` with a ``getsizeof`` (a well-kept library instead of
a hand-rolled ``OrderedDict``); a lock makes it safe for the threads of one worker.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

from cachetools import LRUCache

V = TypeVar("V")


def deep_sizeof(obj: Any, _seen: set[int] | None = None) -> int:
    """Estimated bytes held by ``obj``: ``sys.getsizeof`` summed over the containers, dataclasses, strings
    and numbers reachable from it, each object counted once. Strings shared with other structures are
    counted too, so the figure is an upper bound of what dropping ``obj`` would free."""
    seen = set() if _seen is None else _seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_sizeof(k, seen) + deep_sizeof(v, seen) for k, v in obj.items())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        size += sum(deep_sizeof(v, seen) for v in obj)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        size += sum(deep_sizeof(getattr(obj, f.name), seen) for f in dataclasses.fields(obj))
        if hasattr(obj, "__dict__"):
            size += sys.getsizeof(obj.__dict__)
    return size


class AnswerCache(Generic[V]):
    """Thread-safe LRU of answers, at most ``max_bytes`` of estimated key + answer size (:func:`deep_sizeof`).

    An answer larger than the whole bound is not kept. ``max_bytes=0`` keeps nothing.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._lru: LRUCache[Hashable, tuple[V, int]] = LRUCache(maxsize=max(self.max_bytes, 1), getsizeof=lambda e: e[1])
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            entry = self._lru.get(key)  # a hit becomes the most recently used
        return None if entry is None else entry[0]

    def put(self, key: Hashable, value: V) -> None:
        if self.max_bytes <= 0:
            return
        size = deep_sizeof(key) + deep_sizeof(value)
        if size > self.max_bytes:
            return
        with self._lock:
            self._lru[key] = (value, size)  # evicts the least recently used entries beyond the bound

    @property
    def nbytes(self) -> int:
        """Estimated bytes of the entries held now (never above ``max_bytes``)."""
        return int(self._lru.currsize)

    def __len__(self) -> int:
        return len(self._lru)
