"""The import contracts in pyproject.toml (``[tool.importlinter]``): layers, settings leaves, no cycles.

``lint-imports`` (import-linter) reads the source without importing it. The second test plants an
upward import in a copy of the packages and checks that the same contracts report it, so the first
cannot pass because the contracts check nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint(pythonpath: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=pythonpath, env=env, capture_output=True, text=True, timeout=300,
    )


def test_import_contracts_are_kept() -> None:
    res = _lint(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 broken" in res.stdout


def test_an_upward_import_breaks_the_layers(tmp_path: Path) -> None:
    for pkg in ("recsys", "services"):
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    scoring = tmp_path / "recsys" / "ranking" / "scoring.py"
    scoring.write_text(scoring.read_text() + "\n\nfrom recsys.serving import runtime  # noqa: E402\n")
    res = _lint(tmp_path)
    assert res.returncode != 0
    assert "Layers" in res.stdout and "BROKEN" in res.stdout
    assert "recsys.ranking.scoring -> recsys.serving.runtime" in res.stdout
