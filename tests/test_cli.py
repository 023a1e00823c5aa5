"""The command line: exit codes, messages, the demo as the main job."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from recsys.cli import cli, main
from recsys.store.db import make_engine
from recsys.store.models import Event, Item


def _env(tmp_path: Path) -> dict[str, str]:
    return {"RECSYS_DATA_DIR": str(tmp_path / "data"), "RECSYS_CONFIG": str(tmp_path / "none.yaml")}


def test_ingest_without_schema_says_to_upgrade(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "none.yaml").write_text("{}\n")
    (tmp_path / "items.csv").write_text("item_id,title\n1,x\n")
    for key, value in _env(tmp_path).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SystemExit) as exc:
        main(["ingest", "items", str(tmp_path / "items.csv")])
    assert exc.value.code == 2
    assert "run `recsys db upgrade`" in capsys.readouterr().err


def test_rejected_rows_give_a_non_zero_exit_and_a_summary(tmp_path: Path) -> None:
    (tmp_path / "none.yaml").write_text("{}\n")
    env = _env(tmp_path)
    runner = CliRunner()
    assert runner.invoke(cli, ["db", "upgrade"], env=env).exit_code == 0
    (tmp_path / "items.csv").write_text("sku,name,price\nA,Mug,3\nB,Cap,free\n")
    res = runner.invoke(cli, ["ingest", "items", str(tmp_path / "items.csv"), "--id", "sku", "--text", "name",
                              "--price", "price", "--rejects", str(tmp_path / "rej.jsonl")], env=env)
    assert res.exit_code == 1
    assert "1 new" in res.output and "1 rejected" in res.output and str(tmp_path / "rej.jsonl") in res.output
    (tmp_path / "ev.csv").write_text("u,i,t\nx,A,1\n")
    res = runner.invoke(cli, ["ingest", "events", str(tmp_path / "ev.csv"), "--user", "u", "--item", "i",
                              "--timestamp", "t", "--event-type", "like"], env=env)
    assert res.exit_code != 0 and "allowed" in str(res.exception)


def test_demo_runs_every_stage_on_the_embedded_default(tmp_path: Path) -> None:
    (tmp_path / "none.yaml").write_text("{}\n")
    env = _env(tmp_path)
    res = CliRunner().invoke(cli, ["demo", "--items", "60", "--users", "30"], env=env)
    assert res.exit_code == 0, res.output
    assert "ingest events" in res.output and "done." in res.output
    eng = make_engine(f"sqlite:///{tmp_path / 'data' / 'recsys.sqlite'}")
    with eng.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Item)).scalar_one() == 60
        assert conn.execute(select(func.count()).select_from(Event)).scalar_one() > 100
    eng.dispose()


def test_config_command_reports_bad_keys(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("database:\n  urll: x\n")
    res = CliRunner().invoke(cli, ["--config", str(tmp_path / "bad.yaml"), "config"])
    assert res.exit_code != 0 and "unknown key 'database.urll'" in str(res.exception)
