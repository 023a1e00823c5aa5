"""recsys: multimodal recommendation and product search.

The package is laid out by pipeline stage::

    config      typed, frozen configuration (config.yaml + RECSYS_* overrides)
    store       SQL schema (SQLAlchemy 2.0), engine, Alembic migrations, artifact registry
    ingest      bulk loading of item catalogues and event logs (CSV, JSON Lines, Parquet)
    demo        a generated demo shop that exercises every stage

Heavy dependencies (torch, transformers, scann) are imported where they are used, so that
``import recsys`` stays quick.
"""

from __future__ import annotations

__version__ = "0.1.0"
