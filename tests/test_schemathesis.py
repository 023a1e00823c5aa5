"""schemathesis against ``/openapi.json`` of a live server: no 5xx, every response as documented.

The app (demo shop, tiny encoders, SQLite) runs in a werkzeug server thread on 127.0.0.1; schemathesis'
CLI generates a bounded number of requests per operation (examples, coverage and fuzzing phases, a fixed
seed and a time budget), once without and once with the API key.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.live import live_server
from tests.test_service import KEY, service, tiny_models  # noqa: F401 - fixtures

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.fixture(scope="module")
def module_db_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLite only: the HTTP layer is what is fuzzed here (both databases are covered by test_hardening)."""
    yield f"sqlite:///{tmp_path_factory.mktemp('st') / 'recsys.sqlite'}"


def run_schemathesis(base: str, out: Path, *, key: str | None, max_examples: int, max_time: int, seed: int = 1) -> dict[str, Any]:
    """Run schemathesis' CLI against ``base``; returns its exit code, output tail and JSON report."""
    out.mkdir(parents=True, exist_ok=True)
    report = out / "report.json"
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", f"{base}/openapi.json", "--checks", CHECKS,
           "--phases", "examples,coverage,fuzzing", "--max-examples", str(max_examples), "--max-time", str(max_time),
           "--seed", str(seed), "--workers", "1", "--request-timeout", "30", "--report", "json",
           "--report-json-path", str(report), "--suppress-health-check", "all", "--no-shrink"]
    if key:
        cmd += ["-H", f"X-API-Key: {key}"]
    proc = subprocess.run(cmd, cwd=out, capture_output=True, text=True, timeout=max_time + 120)
    data = json.loads(report.read_text()) if report.is_file() else {}
    return {"rc": proc.returncode, "output": proc.stdout[-6000:] + proc.stderr[-3000:], "report": data}


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_schema_violation(service: Any, tmp_path: Path) -> None:  # noqa: F811
    client, _rt, _config = service
    with live_server(client.application) as base:
        for name, key in (("without-key", None), ("with-key", KEY)):
            result = run_schemathesis(base, tmp_path / name, key=key, max_examples=10, max_time=20)
            assert result["rc"] == 0, f"schemathesis {name} failed:\n{result['output']}"
            report = result["report"]
            assert report["operations"]["tested"] == report["operations"]["selected"] >= 9
            assert report["test_cases"]["generated"] >= 50 and not report["failures"] and not report["errors"]
