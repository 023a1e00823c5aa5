from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine

from recsys.errors import DatabaseError
from recsys.store.db import current_revision, downgrade, head_revision, make_engine, require_schema, table_names, upgrade
from recsys.store.models import Base

TABLES = ["alembic_version", "artifacts", "events", "experiments", "idempotency_keys", "impression_items", "impressions",
          "item_embeddings", "items", "users"]


def test_upgrade_downgrade_round_trip(db_url: str) -> None:
    eng = make_engine(db_url)
    with pytest.raises(DatabaseError, match="recsys db upgrade"):
        require_schema(eng)
    upgrade(eng)
    assert table_names(eng) == TABLES
    assert current_revision(eng) == head_revision()
    require_schema(eng)
    downgrade(eng, "0003")
    assert "impressions" not in table_names(eng) and "idempotency_keys" in table_names(eng)
    downgrade(eng, "0002")
    assert "idempotency_keys" not in table_names(eng) and "item_embeddings" in table_names(eng)
    downgrade(eng, "0001")
    assert "item_embeddings" not in table_names(eng)
    downgrade(eng, "base")
    assert table_names(eng) == ["alembic_version"]
    assert current_revision(eng) is None
    upgrade(eng)  # and up again from scratch
    assert table_names(eng) == TABLES
    eng.dispose()


def test_migrations_match_the_models(engine: Engine) -> None:
    """The hand-written migrations and the SQLAlchemy models describe the same schema."""
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    # Server-side defaults and comment-only differences are not reported by compare_metadata by default.
    assert diff == []


def test_unreachable_database_is_a_clear_error() -> None:
    eng = make_engine("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(DatabaseError, match="unreachable"):
        require_schema(eng)
