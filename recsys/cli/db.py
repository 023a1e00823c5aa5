"""``recsys db``: schema migrations."""

from __future__ import annotations

import click

from recsys.store import db as store_db


@click.group("db")
def db() -> None:
    """Create or migrate the SQL schema (Alembic)."""


@db.command("upgrade")
@click.argument("revision", default="head")
@click.pass_obj
def upgrade(obj, revision: str) -> None:  # type: ignore[no-untyped-def]
    """Migrate the database up to REVISION (default: the latest)."""
    engine = store_db.engine_from_config(obj.config)
    store_db.upgrade(engine, revision)
    click.echo(f"database {engine.url.render_as_string(hide_password=True)} is at revision {store_db.current_revision(engine)}")


@db.command("downgrade")
@click.argument("revision", default="base")
@click.option("--yes", is_flag=True, help="do not ask; needed to drop every table (REVISION=base)")
@click.pass_obj
def downgrade(obj, revision: str, yes: bool) -> None:  # type: ignore[no-untyped-def]
    """Migrate the database down to REVISION (default: base, which drops every table)."""
    engine = store_db.engine_from_config(obj.config)
    if revision == "base" and not yes:
        click.confirm(f"drop every recsys table in {engine.url.render_as_string(hide_password=True)}?", abort=True)
    store_db.downgrade(engine, revision)
    click.echo(f"database {engine.url.render_as_string(hide_password=True)} is at revision {store_db.current_revision(engine) or 'base'}")


@db.command("current")
@click.pass_obj
def current(obj) -> None:  # type: ignore[no-untyped-def]
    """Print the database's schema revision and the latest one."""
    engine = store_db.engine_from_config(obj.config)
    click.echo(f"current: {store_db.current_revision(engine) or 'none'}  head: {store_db.head_revision()}")
