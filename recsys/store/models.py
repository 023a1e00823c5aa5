"""SQL schema: SQLAlchemy 2.0 typed models.

Every change here is also an Alembic migration in ``migrations/versions`` (written and read by a
person); ``tests/test_migrations.py`` checks that the two agree.

Timestamps of events are integer unix seconds (UTC): compact, fast to bulk-load and to aggregate
into an interaction matrix on every backend. Bookkeeping times (created/updated) are timezone-aware
datetimes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Deterministic constraint names, so that migrations can refer to them on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only gives AUTOINCREMENT semantics to INTEGER PRIMARY KEY; BigInteger elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON}


class Item(Base):
    """One catalogue item. ``external_id`` is the shop's id; ``id`` is internal."""

    __tablename__ = "items"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    external_id: Mapped[str] = mapped_column(String(255), unique=True)
    title: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    category: Mapped[str | None] = mapped_column(String(255), index=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    image: Mapped[str | None] = mapped_column(Text)
    """Absolute file path or URL, as resolved at ingestion."""
    price: Mapped[float | None] = mapped_column(Float)
    available: Mapped[bool] = mapped_column(Boolean, default=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    """sha256 over the fields that feed the encoders; a change triggers re-embedding."""
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now, server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now, server_default=func.now())


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    external_id: Mapped[str] = mapped_column(String(255), unique=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now, server_default=func.now())


class Event(Base):
    """One interaction. ``event_key`` makes re-ingesting the same event a no-op (see README)."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_user_ts", "user_id", "ts"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_key: Mapped[str] = mapped_column(String(255), unique=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("items.id", ondelete="CASCADE"), index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    value: Mapped[float | None] = mapped_column(Float)
    ts: Mapped[int] = mapped_column(BigInteger)
    """Unix seconds, UTC."""
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Artifact(Base):
    """Registry of trained or built artifacts (CF models, encoders heads, indexes, exports)."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("kind", "version", name="uq_artifacts_kind_version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[str] = mapped_column(String(128))
    path: Mapped[str | None] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now, server_default=func.now())


class ItemEmbedding(Base):
    """One item's vector in one space (``text`` / ``image``) from one encoder version.

    ``encoder`` is the encoder's version string (name + weights hash); ``content_hash`` is the item's
    hash when it was embedded, so a changed item is re-embedded. A failed input (missing or broken
    image) is stored with ``vector = NULL`` and the reason in ``error``, so it is not retried until
    the item changes.
    """

    __tablename__ = "item_embeddings"
    __table_args__ = (UniqueConstraint("item_id", "space", "encoder", name="uq_item_embeddings_item_space_encoder"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    item_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("items.id", ondelete="CASCADE"))
    space: Mapped[str] = mapped_column(String(32))
    encoder: Mapped[str] = mapped_column(String(255), index=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes | None] = mapped_column(LargeBinary)
    """``dim`` little-endian float32 values; NULL when ``error`` is set."""
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now, server_default=func.now())


class IdempotencyRecord(Base):
    """The outcome of a request sent with an ``Idempotency-Key`` header, replayed to its retries.

    ``scope`` names the endpoint (``events``); ``fingerprint`` hashes the request body, so that a key
    reused with another body is refused. Rows older than ``service.idempotency_window_s`` are deleted.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("scope", "key", name="uq_idempotency_keys_scope_key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now, server_default=func.now(), index=True)


class Impression(Base):
    """One served list (a feed page, a similar-items widget, a search answer), logged by the service.

    ``request_id`` is the id returned with the list; events posted with it are credited to the list.
    ``user_id`` is the external user id as requested (not a foreign key: a feed may be served to a user
    who has no events yet). ``ts_ms`` is unix milliseconds.
    """

    __tablename__ = "impressions"
    __table_args__ = (Index("ix_impressions_user_ts", "user_id", "ts_ms"),)

    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    surface: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str | None] = mapped_column(String(255))
    experiment: Mapped[str | None] = mapped_column(String(64), index=True)
    variant: Mapped[str | None] = mapped_column(String(64))
    model_version: Mapped[str | None] = mapped_column(String(128))
    index_version: Mapped[str | None] = mapped_column(String(128))
    ts_ms: Mapped[int] = mapped_column(BigInteger, index=True)


class ImpressionItem(Base):
    """One position of a served list. ``team``: the variant credited with the item (interleaving)."""

    __tablename__ = "impression_items"

    request_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("impressions.request_id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[str] = mapped_column(String(255))
    team: Mapped[str | None] = mapped_column(String(64))


class Experiment(Base):
    """An experiment created with ``recsys experiments create`` (``definition``: an ``ExperimentConfig``)."""

    __tablename__ = "experiments"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now, server_default=func.now())
