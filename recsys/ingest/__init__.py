"""Bulk ingestion of item catalogues and event logs (CSV, JSON Lines, Parquet) into SQL."""

from recsys.ingest.events import AppendResult, append_event_records, ingest_events
from recsys.ingest.items import ingest_items
from recsys.ingest.report import IngestReport

__all__ = ["AppendResult", "IngestReport", "append_event_records", "ingest_events", "ingest_items"]
