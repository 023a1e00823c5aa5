"""What the service functions answer: ranked items with their reasons (serialised by the HTTP layer)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RankedItem:
    id: str
    score: float
    title: str | None
    category: str | None
    reasons: list[dict[str, Any]]


@dataclass(frozen=True)
class Ranked:
    items: list[RankedItem]


@dataclass(frozen=True)
class Feed(Ranked):
    cold_start: bool = False
    next_cursor: str | None = None
