"""``recsys index``: build, publish and inspect retrieval indexes.

Each index name has a root ``<artifacts>/index-<name>`` holding its versions and a ``CURRENT``
pointer (see :mod:`recsys.index.publish`); the SQL registry kind is ``index-<name>``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from recsys.errors import DatabaseError, InputFormatError


def _root(ctx: click.Context, name: str) -> Path:
    return Path(ctx.obj.config.artifacts_path) / f"index-{name}"


def _engine(ctx: click.Context) -> Any:
    from recsys.store.db import engine_from_config

    return engine_from_config(ctx.obj.config)


def _load_npy(path: str, what: str) -> Any:
    import numpy as np

    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputFormatError(f"{path}: cannot read {what} as a .npy array: {exc}") from exc
    if arr.ndim != 2:
        raise InputFormatError(f"{path}: {what} must be a 2-D array (n, dim), got shape {arr.shape}")
    return arr


def _registry_errors() -> tuple[type[Exception], ...]:
    from sqlalchemy.exc import OperationalError, ProgrammingError

    return (OperationalError, ProgrammingError)


name_option = click.option(
    "--name", default="items", show_default=True,
    help="index name: root <artifacts>/index-NAME, registry kind index-NAME",
)


@click.group("index")
def index() -> None:
    """Build, publish and inspect retrieval indexes (ScaNN, exact fallback)."""


@index.command("build")
@click.argument("vectors", type=click.Path(exists=True, dir_okay=False))
@name_option
@click.option("--backend", type=click.Choice(["auto", "scann", "exact"]), default=None, help="override index.backend")
@click.option("--queries", type=click.Path(exists=True, dir_okay=False), default=None,
              help=".npy (m, dim) of typical queries to measure recall on (default: indexed rows)")
@click.option("--version", "version", default=None, help="version name (default: UTC time + random suffix)")
@click.option("--register/--no-register", default=True, show_default=True, help="mark the version active in SQL")
@click.option("--keep", type=click.IntRange(min=1), default=None, help="then delete all but the newest KEEP versions")
@click.pass_context
def build(ctx: click.Context, vectors: str, name: str, backend: str | None, queries: str | None,
          version: str | None, register: bool, keep: int | None) -> None:
    """Build an index over VECTORS (.npy, (n, dim) float32; row i is id i) and publish it atomically."""
    from recsys.index.factory import build_index
    from recsys.index.publish import prune, publish

    cfg = ctx.obj.config.index
    if backend is not None:
        cfg = cfg.model_copy(update={"backend": backend})
    sample = _load_npy(queries, "queries") if queries else None
    retriever = build_index(_load_npy(vectors, "vectors"), cfg, queries=sample)
    root = _root(ctx, name)
    engine = _engine(ctx) if register else None
    try:
        published = publish(retriever, root, version=version, engine=engine, kind=f"index-{name}" if register else None)
    except _registry_errors() as exc:
        raise DatabaseError(
            f"cannot register the index in the database (is it migrated?): {getattr(exc, 'orig', exc)}; "
            "nothing was activated; use --no-register to publish without the registry"
        ) from exc
    removed = prune(root, keep) if keep else []
    info = retriever.info
    click.echo(json.dumps({
        "version": published, "path": str(root / published), "backend": retriever.backend, "n": retriever.size,
        "dim": retriever.dim, f"recall_at_{info.get('recall_k', 10)}": info.get("recall_at_k"),
        "params": info.get("params", {}), "build_seconds": info.get("build_seconds"), "pruned": removed,
    }, indent=2))


@index.command("list")
@name_option
@click.pass_context
def list_cmd(ctx: click.Context, name: str) -> None:
    """List the versions of an index; the active one is marked with '*'."""
    from recsys.index.manifest import read_manifest
    from recsys.index.publish import active_version, list_versions

    root = _root(ctx, name)
    active = active_version(root)
    for v in list_versions(root):
        m = read_manifest(root / v)
        mark = "*" if v == active else " "
        click.echo(f"{mark} {v}  {m['backend']:<6} n={m['n']} recall@{m['recall_k']}={m['recall_at_k']}")


@index.command("show")
@name_option
@click.option("--version", "version", default=None, help="default: the active version")
@click.pass_context
def show(ctx: click.Context, name: str, version: str | None) -> None:
    """Print a version's manifest (JSON)."""
    from recsys.errors import ArtifactError
    from recsys.index.manifest import read_manifest
    from recsys.index.publish import active_version

    root = _root(ctx, name)
    version = version or active_version(root)
    if version is None:
        raise ArtifactError(f"no index published in {root}; run `recsys index build`")
    click.echo(json.dumps(read_manifest(root / version), indent=2, sort_keys=True))


@index.command("activate")
@click.argument("version")
@name_option
@click.option("--register/--no-register", default=True, show_default=True, help="also mark it active in SQL")
@click.pass_context
def activate_cmd(ctx: click.Context, version: str, name: str, register: bool) -> None:
    """Make an existing VERSION the active one (roll back or forward)."""
    from recsys.index.publish import activate

    try:
        activate(_root(ctx, name), version, engine=_engine(ctx) if register else None,
                 kind=f"index-{name}" if register else None)
    except _registry_errors() as exc:
        raise DatabaseError(
            f"cannot update the registry (is the database migrated?): {getattr(exc, 'orig', exc)}"
        ) from exc
    click.echo(f"index-{name}: active version {version}")


@index.command("rebuild")
@click.pass_context
def rebuild(ctx: click.Context) -> None:
    """Rebuild the service's similar-items index (index-similar) from the current catalogue, model and
    `index` settings, and publish it; running services pick it up without a restart."""
    from recsys.serving import Runtime

    rt = Runtime.from_config(ctx.obj.config)
    ready, checks = rt.readiness()
    if not ready:
        raise click.ClickException(f"cannot load the serving state: {checks}")
    version = rt.rebuild_index()
    click.echo(json.dumps({"index": "similar", "version": version, **{k: v for k, v in rt.versions().items() if k != "index"}}))
