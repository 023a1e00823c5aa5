"""Engine creation and schema migrations (Alembic, run programmatically)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, OperationalError

from recsys.config import Config
from recsys.errors import DatabaseError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA cache_size=-262144")  # up to 256 MiB of page cache: bulk loads touch random index pages
    cur.close()


def _record_pid(_dbapi_conn: Any, record: Any) -> None:
    record.info["pid"] = os.getpid()


def _refuse_other_pid(_dbapi_conn: Any, record: Any, proxy: Any) -> None:
    """A pooled connection opened by another process (the pool was copied by ``fork``) is never used here:
    it is dropped from this process's pool without being closed (it is the other process's) and the pool
    opens a new one. Serving processes dispose of an inherited pool right after the fork
    (``Runtime.after_fork``); this is the guard for code that does not."""
    pid = os.getpid()
    owner = record.info.get("pid")
    if owner is not None and owner != pid:
        log.warning("database: a pooled connection of process %s was checked out in process %s (a pool copied "
                    "by fork); opening a new one", owner, pid)
        record.dbapi_connection = proxy.dbapi_connection = None
        raise DisconnectionError(f"connection opened by process {owner}, checked out in process {pid}")


def make_engine(url: str, echo: bool = False) -> Engine:
    """Create an engine; SQLite files get their folder created, WAL mode and foreign keys on.

    ``postgresql://`` URLs use psycopg 3. Each pooled connection records the pid of the process that opened it
    (``connection.info["pid"]``); one checked out in another process (a pool inherited through ``fork``) is
    replaced, never shared.
    """
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, echo=echo)
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(parsed, echo=echo, pool_pre_ping=True)
    event.listen(engine, "connect", _record_pid)
    event.listen(engine, "checkout", _refuse_other_pid)
    return engine


def engine_from_config(config: Config) -> Engine:
    return make_engine(config.database_url, echo=config.database.echo)


def _alembic_config(engine: Engine):  # type: ignore[no-untyped-def]
    from alembic.config import Config as AlembicConfig

    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise DatabaseError(
            f"Alembic migrations not found at {MIGRATIONS_DIR}; install the project from its source "
            "checkout (pip install -e .)"
        )
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def _migrate(engine: Engine, direction: str, revision: str) -> None:
    from alembic import command

    cfg = _alembic_config(engine)
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            getattr(command, direction)(cfg, revision)
    except OperationalError as exc:
        raise DatabaseError(f"cannot migrate {engine.url!r}: {exc.orig}") from exc


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database up to ``revision``."""
    _migrate(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Migrate the database down to ``revision`` (``base`` drops every table)."""
    _migrate(engine, "downgrade", revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    from sqlalchemy import create_engine as _ce

    script = ScriptDirectory.from_config(_alembic_config(_ce("sqlite://")))
    head = script.get_current_head()
    assert head is not None  # the migrations folder always has one
    return head


def require_schema(engine: Engine) -> None:
    """Raise :class:`DatabaseError` unless the database is reachable and at the head revision."""
    try:
        rev = current_revision(engine)
    except OperationalError as exc:
        raise DatabaseError(f"database {engine.url!r} is unreachable: {exc.orig}") from exc
    head = head_revision()
    if rev != head:
        raise DatabaseError(
            f"database {engine.url!r} is at schema revision {rev or 'none'}, expected {head}; "
            "run `recsys db upgrade`"
        )


def table_names(engine: Engine) -> list[str]:
    return sorted(inspect(engine).get_table_names())
