"""Shared fixtures: databases (SQLite file and PostgreSQL over a real connection) and the shared data."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from recsys.store.db import make_engine, upgrade

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RECSYS_SHARED_DATA", REPO.parent / "shared" / "data"))
POSTGRES_URL = os.environ.get("RECSYS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

_pg_state: dict[str, str | None] = {}


def postgres_unavailable() -> str | None:
    """Why PostgreSQL cannot be used (``None`` when it can). Checked once per session."""
    if "reason" not in _pg_state:
        try:
            eng = make_engine(POSTGRES_URL)
            with eng.connect() as conn:
                conn.execute(text("SELECT 1"))
            eng.dispose()
            _pg_state["reason"] = None
        except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"; the reason is reported
            _pg_state["reason"] = f"PostgreSQL not reachable at {POSTGRES_URL}: {type(exc).__name__}: {exc}".splitlines()[0]
    return _pg_state["reason"]


@pytest.fixture(scope="module", autouse=True)
def _close_impression_logs() -> Iterator[None]:
    """Close the impression loggers that a test module's apps opened, once the module is done: their writer
    threads would otherwise keep polling (and pruning databases already deleted) until the interpreter exits."""
    from recsys.serving.impressions import live_logs

    before = {id(lg) for lg in live_logs()}
    yield
    for lg in live_logs():
        if id(lg) not in before:
            lg.close(5.0)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "movielens-100k-posters" / "items.csv").is_file():
        pytest.skip(f"shared data sets not found at {SHARED_DATA} (set RECSYS_SHARED_DATA)")
    return SHARED_DATA


@contextlib.contextmanager
def scratch_postgres() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards (skips the test when none is reachable)."""
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    name = f"recsys_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(make_url(POSTGRES_URL).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    with scratch_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind: a SQLite file, and a PostgreSQL database over a real connection."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'recsys.sqlite'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated (head) database of each kind."""
    eng = make_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    eng = make_engine(f"sqlite:///{tmp_path / 'recsys.sqlite'}")
    upgrade(eng)
    yield eng
    eng.dispose()


def pytest_report_header(config: pytest.Config) -> list[str]:
    reason = postgres_unavailable()
    pg = f"PostgreSQL tests: {'SKIPPED: ' + reason if reason else 'on ' + POSTGRES_URL}"
    data = f"shared data: {SHARED_DATA} ({'found' if SHARED_DATA.is_dir() else 'MISSING: tests that need it are skipped'})"
    return [pg, data]
