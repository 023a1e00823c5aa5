"""The shared data sets load exactly, as they are, on SQLite and PostgreSQL; a second run adds nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from recsys.cli import cli
from recsys.store.db import make_engine
from recsys.store.models import Event, Item, User

pytestmark = pytest.mark.shared_data


def _counts(url: str) -> tuple[int, int, int, int]:
    eng = make_engine(url)
    with eng.connect() as conn:
        out = (
            conn.execute(select(func.count()).select_from(Item)).scalar_one(),
            conn.execute(select(func.count()).select_from(Item).where(Item.image.is_not(None))).scalar_one(),
            conn.execute(select(func.count()).select_from(Event)).scalar_one(),
            conn.execute(select(func.count()).select_from(User)).scalar_one(),
        )
    eng.dispose()
    return out


@pytest.mark.parametrize(
    ("folder", "preset", "expected"),
    [
        ("movielens-100k-posters", "movielens", (1682, 1396, 100_000, 943)),
        ("hm-fashion-sample", "hm", (8000, 8000, 9925, 1037)),
    ],
)
def test_shared_set_loads_exactly_and_idempotently(
    shared_data: Path, db_url: str, tmp_path: Path, folder: str, preset: str, expected: tuple[int, int, int, int]
) -> None:
    env = {"RECSYS_DATABASE_URL": db_url, "RECSYS_DATA_DIR": str(tmp_path / "data")}
    runner = CliRunner()
    res = runner.invoke(cli, ["db", "upgrade"], env=env)
    assert res.exit_code == 0, res.output
    for _ in range(2):  # the second run must change no counts
        for kind in ("items", "events"):
            res = runner.invoke(cli, ["ingest", kind, str(shared_data / folder / f"{kind}.csv"), "--preset", preset], env=env)
            assert res.exit_code == 0, res.output
            assert "0 rejected" in res.output
        assert _counts(db_url) == expected
    assert "0 new, 0 updated" in runner.invoke(
        cli, ["ingest", "items", str(shared_data / folder / "items.csv"), "--preset", preset], env=env
    ).output
    # image paths were resolved against the file's folder and point at real files
    eng = make_engine(db_url)
    with eng.connect() as conn:
        images = conn.execute(select(Item.image).where(Item.image.is_not(None)).limit(20)).scalars().all()
    eng.dispose()
    assert images and all(Path(p).is_file() for p in images)
