"""Train the CF model from the SQL events and save it as a versioned, registered artifact.

``artifacts_path/cf/<version>/`` holds the factors, both id maps, the configuration and
``manifest.json``; the ``artifacts`` table gets a row (kind ``cf``) with the config and metrics, and the
new version becomes the active one unless asked otherwise.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from recsys.cf.model import CFModel
from recsys.cf.sql import matrix_from_sql
from recsys.config import Config
from recsys.errors import ArtifactError, RecsysError
from recsys.store.artifacts import active_artifact, get_artifact, register_artifact

log = logging.getLogger(__name__)

__all__ = ["TrainResult", "load_cf", "new_version", "train_from_sql"]


@dataclass(frozen=True)
class TrainResult:
    version: str
    path: Path
    model: CFModel
    metrics: dict[str, Any]


def new_version(model_name: str, now: dt.datetime | None = None) -> str:
    """``YYYYmmddTHHMMSSffffffZ-<model>`` (UTC), sortable by time."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{model_name}"


def train_from_sql(engine: Engine, config: Config, version: str | None = None, activate: bool = True) -> TrainResult:
    """Build the matrix from the events table, fit ``config.cf.model``, save and register the artifact.

    Raises:
        RecsysError: no event with a positive weight to train on.
        ArtifactError: the version folder exists already.
    """
    cfg = config.cf
    version = version or new_version(cfg.model)
    target = config.artifacts_path / "cf" / version
    if target.exists():
        raise ArtifactError(f"artifact folder {target} exists already; choose another --version")
    t0 = time.perf_counter()
    matrix = matrix_from_sql(engine, cfg, config.event_types)
    t1 = time.perf_counter()
    if matrix.weights.nnz == 0:
        raise RecsysError(
            f"no events to train on: the events table has no event of a type in config.event_types "
            f"({sorted(config.event_types)}) with a positive weight"
        )
    model = CFModel.fit(matrix.weights, matrix.users, matrix.items, cfg)
    t2 = time.perf_counter()
    metrics = {
        "matrix_seconds": round(t1 - t0, 3),
        "fit_seconds": round(t2 - t1, 3),
        "users": len(matrix.users),
        "items": len(matrix.items),
        "pairs": int(matrix.weights.nnz),
        "events": matrix.n_events,
    }
    model.info.update({"event_types": dict(config.event_types), "last_event_ts": matrix.last_ts})
    from recsys.store.staging import staging_dir

    with staging_dir(target.parent, f".{version}.tmp") as tmp:  # also removes those a killed run left
        model.save(tmp, manifest={
            "version": version,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
            "metrics": metrics,
        })
        tmp.rename(target)
    register_artifact(
        engine, "cf", version, str(target.resolve()),
        config={"cf": cfg.model_dump(mode="json"), "event_types": dict(config.event_types)},
        metrics=metrics, activate=activate,
    )
    log.info("cf artifact %s: %s", version, metrics)
    return TrainResult(version, target, model, metrics)


def load_cf(engine: Engine, version: str | None = None) -> CFModel:
    """Load a registered CF artifact (the active one by default).

    Raises:
        ArtifactError: none registered / active, or its folder is missing or broken.
    """
    record = get_artifact(engine, "cf", version) if version else active_artifact(engine, "cf")
    if record is None:
        raise ArtifactError("no active cf artifact; run `recsys train`")
    if not record.path or not Path(record.path).is_dir():
        raise ArtifactError(f"cf artifact {record.version} points to a missing folder {record.path!r}")
    return CFModel.load(record.path)
