"""Reject files and ingest reports."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any


class RejectWriter:
    """Writes one JSON object per rejected row: ``{"line": 12, "field": "price", "reason": ..., "row": {...}}``.

    ``line`` is the 1-based line in the input (for Parquet ``row_number``, the 1-based row number). The file
    is created only when the first row is rejected. The ``row`` object holds the original values, so
    a fixed reject file can be fed back in.
    """

    def __init__(self, path: Path, position_name: str = "line") -> None:
        self.path = path
        self.position_name = position_name
        self.count = 0
        self.reasons: Counter[str] = Counter()
        self._fh: Any = None

    def write(self, position: int, field: str | None, reason: str, row: Any) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("w", encoding="utf-8")
        rec = {self.position_name: position, "field": field, "reason": reason, "row": row}
        self._fh.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
        self.count += 1
        self.reasons[f"{field}: {reason.split(';')[0]}" if field else reason.split(";")[0]] += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> RejectWriter:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


@dataclass
class IngestReport:
    """What one ingest run did. ``rejected > 0`` means the reject file lists those rows."""

    kind: str
    path: str
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    new_users: int = 0
    reject_path: str | None = None
    reject_reasons: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.rejected == 0

    def summary(self) -> str:
        rate = f", {self.rows / self.seconds:,.0f} rows/s" if self.seconds > 0 else ""
        if self.kind == "items":
            parts = f"{self.inserted:,} new, {self.updated:,} updated, {self.unchanged:,} unchanged"
        else:
            parts = f"{self.inserted:,} new, {self.unchanged:,} already present, {self.new_users:,} new users"
        text = f"{self.kind}: {self.rows:,} rows read from {self.path}: {parts}, {self.rejected:,} rejected ({self.seconds:.1f} s{rate})"
        if self.rejected:
            top = "; ".join(f"{n:,} x {r}" for r, n in sorted(self.reject_reasons.items(), key=lambda kv: -kv[1])[:5])
            text += f"\n  rejected rows are in {self.reject_path}: {top}"
        return text
