"""Bulk ingestion of item catalogues and event logs (CSV, JSON Lines, Parquet) into SQL."""

from recsys.ingest.events import ingest_events
from recsys.ingest.items import ingest_items
from recsys.ingest.report import IngestReport

__all__ = ["IngestReport", "ingest_events", "ingest_items"]
