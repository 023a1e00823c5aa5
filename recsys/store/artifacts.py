"""Registry of trained and built artifacts in SQL (``artifacts`` table).

An artifact is a directory under the artifacts folder with a ``manifest.json``; the registry row names
its kind (``cf``, ``align``, ``index-items``, ``export``...), version, config and metrics, and which
version of each kind is active. Activating one version deactivates the others of that kind in the
same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from recsys.errors import ArtifactError
from recsys.store.models import Artifact


@dataclass(frozen=True)
class ArtifactRecord:
    kind: str
    version: str
    path: str | None
    config: dict[str, Any]
    metrics: dict[str, Any]
    active: bool


def register_artifact(
    engine: Engine,
    kind: str,
    version: str,
    path: str | None,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    activate: bool = True,
) -> ArtifactRecord:
    """Insert (or update, if ``kind``/``version`` exists) an artifact row; optionally make it the active one."""
    with engine.begin() as conn:
        existing = _artifact_id(conn, kind, version)
        values = {"path": path, "config": config or {}, "metrics": metrics or {}}
        if existing is None:
            conn.execute(Artifact.__table__.insert().values(kind=kind, version=version, active=False, **values))
        else:
            conn.execute(update(Artifact).where(Artifact.id == existing).values(**values))
        if activate:
            _make_active(conn, kind, version)
    return get_artifact(engine, kind, version)


def _artifact_id(conn: Connection, kind: str, version: str) -> int | None:
    return conn.execute(
        select(Artifact.id).where(Artifact.kind == kind, Artifact.version == version)
    ).scalar_one_or_none()


def _make_active(conn: Connection, kind: str, version: str) -> None:
    conn.execute(update(Artifact).where(Artifact.kind == kind).values(active=Artifact.version == version))


def activate_artifact(engine: Engine, kind: str, version: str) -> None:
    with engine.begin() as conn:
        if _artifact_id(conn, kind, version) is None:
            raise ArtifactError(f"no {kind} artifact with version {version!r}")
        _make_active(conn, kind, version)


def get_artifact(engine: Engine, kind: str, version: str) -> ArtifactRecord:
    with engine.connect() as conn:
        row = conn.execute(
            select(Artifact.__table__).where(Artifact.kind == kind, Artifact.version == version)
        ).first()
    if row is None:
        raise ArtifactError(f"no {kind} artifact with version {version!r}")
    return _row_record(row)


def _row_record(row: Any) -> ArtifactRecord:
    m = row._mapping
    return ArtifactRecord(m["kind"], m["version"], m["path"], dict(m["config"] or {}), dict(m["metrics"] or {}), m["active"])


def active_artifact(engine: Engine, kind: str) -> ArtifactRecord | None:
    """The active version of ``kind``, or ``None`` when none was registered."""
    with engine.connect() as conn:
        row = conn.execute(
            select(Artifact.__table__).where(Artifact.kind == kind, Artifact.active.is_(True))
        ).first()
    return None if row is None else _row_record(row)


def list_artifacts(engine: Engine, kind: str | None = None) -> list[ArtifactRecord]:
    stmt = select(Artifact.__table__).order_by(Artifact.created_at, Artifact.id)
    if kind is not None:
        stmt = stmt.where(Artifact.kind == kind)
    with engine.connect() as conn:
        return [_row_record(r) for r in conn.execute(stmt)]
