"""Runtime results to JSON."""

from __future__ import annotations

from typing import Any


def ranked_json(ranked: Any, versions: dict[str, str | None]) -> dict[str, Any]:
    return {
        "items": [
            {"id": it.id, "score": round(float(it.score), 6), "title": it.title, "category": it.category, "reasons": it.reasons}
            for it in ranked.items
        ],
        "model_version": versions.get("model"),
        "index_version": versions.get("index"),
    }


def search_json(ranked: Any, versions: dict[str, str | None]) -> dict[str, Any]:
    """A search answer (:class:`recsys.search.serving.SearchRanked`): the ranked items, plus the mode used,
    facet counts and how the query was understood."""
    return {**ranked_json(ranked, versions), "mode": ranked.mode, "facets": ranked.facets,
            "corrected": ranked.corrected, "understood": ranked.understood}
