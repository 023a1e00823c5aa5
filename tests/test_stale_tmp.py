"""Temporary folders left by a killed save (issue 11, item 8) are removed by the next run.

``recsys train`` saves the feed (or CF) model into ``<artifacts>/<kind>/.<version>.tmp`` and renames it;
a run killed in between used to leave that folder forever. The next save of the same kind removes it,
with the function index publishing uses (:func:`recsys.store.staging.staging_dir`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from click.testing import CliRunner

from tests.test_cf import _checkerboard_events, _fill

REPO = Path(__file__).resolve().parents[1]


def _setup(tmp_path: Path) -> Path:
    from recsys.store.db import make_engine, upgrade

    eng = make_engine(f"sqlite:///{tmp_path / 'data' / 'recsys.sqlite'}")
    upgrade(eng)
    _fill(eng, _checkerboard_events(), n_items=16)
    eng.dispose()
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(f"data_dir: {tmp_path / 'data'}\ncf:\n  factors: 3\n  iterations: 5\n", encoding="utf-8")
    return cfg_file


def _stale(folder: Path) -> Path:
    """What a `recsys train` killed between saving and renaming leaves behind."""
    folder.mkdir(parents=True)
    (folder / "item_factors.npy").write_bytes(b"\0" * 4096)
    return folder


def test_the_next_train_removes_the_temporary_folders_a_killed_train_left(tmp_path: Path) -> None:
    from recsys.cli import cli

    cfg_file = _setup(tmp_path)
    artifacts = tmp_path / "data" / "artifacts"
    stale_feed = _stale(artifacts / "feed" / ".20260101T000000000000Z-hybrid.tmp")
    stale_cf = _stale(artifacts / "cf" / ".20260101T000000000000Z-als.tmp")
    res = CliRunner().invoke(cli, ["--config", str(cfg_file), "train", "--no-content", "--version", "f1", "--json"])
    assert res.exit_code == 0, res.output
    assert Path(json.loads(res.output)["path"]).is_dir()
    assert not stale_feed.exists()
    assert [p.name for p in (artifacts / "feed").iterdir() if p.is_dir()] == ["f1"]
    res = CliRunner().invoke(cli, ["--config", str(cfg_file), "train", "--cf-only", "--version", "c1"])
    assert res.exit_code == 0, res.output
    assert not stale_cf.exists() and (artifacts / "cf" / "c1" / "manifest.json").is_file()


def test_a_save_killed_inside_the_staging_block_leaves_a_folder_the_next_one_removes(tmp_path: Path) -> None:
    """A real SIGKILL while the staging lock is held: the lock goes with the process, the folder stays
    until the next save into that root removes it."""
    from recsys.store.staging import staging_dir

    root = tmp_path / "feed"
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from recsys.store.staging import staging_dir\n"
        "with staging_dir(Path(sys.argv[1]), '.v0.tmp') as tmp:\n"
        "    tmp.mkdir()\n"
        "    (tmp / 'half.npy').write_bytes(b'x' * 1000)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(root)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          timeout=60, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert (root / ".v0.tmp" / "half.npy").is_file()
    with staging_dir(root, ".v1.tmp") as tmp:  # does not wait for the dead process's lock
        assert not (root / ".v0.tmp").exists()
        tmp.mkdir()
        tmp.rename(root / "v1")
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["v1"]


def test_a_folder_being_written_is_not_taken_for_a_stale_one(tmp_path: Path) -> None:
    """Two saves into one root: the second waits for the first instead of deleting its folder."""
    from recsys.store.staging import staging_dir

    root = tmp_path / "feed"
    entered = threading.Event()
    release = threading.Event()
    seen: list[bool] = []

    def first() -> None:
        with staging_dir(root, ".a.tmp") as tmp:
            tmp.mkdir()
            entered.set()
            release.wait(10)
            seen.append((tmp / ".").is_dir())
            tmp.rename(root / "a")

    t = threading.Thread(target=first)
    t.start()
    assert entered.wait(10)
    done = threading.Event()

    def second() -> None:
        with staging_dir(root, ".b.tmp") as tmp:
            tmp.mkdir()
            tmp.rename(root / "b")
        done.set()

    t2 = threading.Thread(target=second)
    t2.start()
    time.sleep(0.3)
    assert not done.is_set()  # waiting for the first save's lock
    release.set()
    t.join(10)
    t2.join(10)
    assert seen == [True] and sorted(p.name for p in root.iterdir() if p.is_dir()) == ["a", "b"]
