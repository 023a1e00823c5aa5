"""Serving: the in-memory runtime behind the Flask service (no Flask imports here)."""

from recsys.serving.runtime import Feed, Ranked, RankedItem, Runtime

__all__ = ["Feed", "Ranked", "RankedItem", "Runtime"]
