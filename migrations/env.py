"""Alembic environment: runs against the connection that recsys hands over, or the configured URL."""

from __future__ import annotations

import os

from alembic import context

from recsys.store.models import Base

target_metadata = Base.metadata
config = context.config


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    # Invoked through the alembic command line: take the URL the same way the recsys CLI does.
    from recsys.config import load_config
    from recsys.store.db import make_engine

    url = config.get_main_option("sqlalchemy.url") or load_config(env=os.environ).database_url
    engine = make_engine(url)
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
