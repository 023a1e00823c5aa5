"""The one owner of ids: external ids (strings) <-> row numbers of the factor matrices."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.errors import ArtifactError, UnknownIdError

__all__ = ["IdMap"]


class IdMap:
    """An ordered set of external ids; row ``r`` of a factor matrix belongs to ``ids[r]``.

    Args:
        ids: distinct external ids, in row order (converted to ``str``).
        kind: what the ids name (``"user"``, ``"item"``), for error messages.

    Raises:
        ValueError: an id appears twice.
    """

    def __init__(self, ids: Iterable[object], kind: str = "item") -> None:
        self.kind = kind
        self._ids = np.asarray([str(x) for x in ids], dtype=object)
        self._index = pd.Index(self._ids)
        if not self._index.is_unique:
            dup = self._index[self._index.duplicated()][0]
            raise ValueError(f"{kind} id {dup!r} appears more than once in the id map")

    def __len__(self) -> int:
        return int(self._ids.shape[0])

    def __contains__(self, external_id: object) -> bool:
        return str(external_id) in self._index

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and self.kind == other.kind and bool(np.array_equal(self._ids, other._ids))

    def __repr__(self) -> str:
        return f"IdMap(kind={self.kind!r}, n={len(self)})"

    @property
    def ids(self) -> np.ndarray:
        """``(n,)`` object array of the external ids in row order (a copy)."""
        return self._ids.copy()

    def row(self, external_id: object) -> int:
        """Row of one external id.

        Raises:
            UnknownIdError: the id is not in the map.
        """
        pos = self._index.get_indexer([str(external_id)])[0]
        if pos < 0:
            raise UnknownIdError(f"unknown {self.kind} id {str(external_id)!r} ({len(self)} {self.kind}s are known)")
        return int(pos)

    def rows(self, external_ids: Sequence[object], missing: str = "raise") -> np.ndarray:
        """Rows of many external ids, ``(len(external_ids),)`` int64.

        Args:
            missing: ``"raise"`` (default) raises on the first unknown id; ``"skip"`` returns ``-1`` for it.

        Raises:
            UnknownIdError: an unknown id with ``missing="raise"``.
        """
        if missing not in ("raise", "skip"):
            raise ValueError(f"missing must be one of ['raise', 'skip'], got {missing!r}")
        pos = self._index.get_indexer([str(x) for x in external_ids]).astype(np.int64)
        if missing == "raise" and (pos < 0).any():
            bad = str(external_ids[int(np.flatnonzero(pos < 0)[0])])
            raise UnknownIdError(f"unknown {self.kind} id {bad!r} ({len(self)} {self.kind}s are known)")
        return pos

    def external(self, rows: Sequence[int] | np.ndarray) -> list[str]:
        """External ids of rows.

        Raises:
            UnknownIdError: a row outside ``0 .. len - 1``.
        """
        arr = np.asarray(rows, dtype=np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= len(self)):
            raise UnknownIdError(f"{self.kind} row out of range 0..{len(self) - 1}")
        return [str(x) for x in self._ids[arr]]

    def save(self, path: str | Path) -> None:
        """Write the ids as a JSON list (row order)."""
        Path(path).write_text(json.dumps({"kind": self.kind, "ids": self._ids.tolist()}), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> IdMap:
        """Read what :meth:`save` wrote.

        Raises:
            ArtifactError: missing or malformed file.
        """
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(raw["ids"], kind=str(raw["kind"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"cannot read id map {path}: {exc}") from exc
