"""Where local item images may be read from, by configuration and by what was ingested.

The policy itself (which paths and addresses are allowed) is :mod:`recsys.encoders.access`; this module
builds it from the configuration (``images`` and the ``encoders.image`` download limits) and keeps the
folders that ``recsys ingest items`` read files from in the artifacts registry (kind :data:`ROOT_KIND`),
so that their images stay readable by ``recsys embed``, the service and the web UI later.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Engine

from recsys.config import Config
from recsys.encoders.access import ImagePolicy, unique_roots
from recsys.store.artifacts import list_artifacts, register_artifact

ROOT_KIND = "image-root"
"""Artifacts-registry kind of the folders recorded by ``recsys ingest items`` (``path`` = the folder)."""
API_IMAGES = "images"
"""Folder under ``data_dir`` that API item images may be read from (relative paths are taken from it)."""


def recorded_roots(engine: Engine) -> list[Path]:
    """The folders recorded by earlier ingests (artifacts registry, kind :data:`ROOT_KIND`)."""
    return [Path(r.path) for r in list_artifacts(engine, ROOT_KIND) if r.path]


def record_root(engine: Engine, folder: str | Path) -> None:
    """Remember ``folder`` (resolved) as a root images may be read from later (idempotent)."""
    path = str(Path(folder).resolve())
    version = hashlib.sha256(path.encode("utf-8")).hexdigest()[:32]
    register_artifact(engine, ROOT_KIND, version, path, activate=False)


def image_roots(config: Config, engine: Engine | None = None) -> list[Path]:
    """Folders local item images may be read from: ``<data_dir>/images`` (the first: API paths are relative
    to it), ``images.roots``, and with ``engine`` the folders recorded by ``recsys ingest``. Resolved."""
    roots: list[str | Path] = [config.data_dir / API_IMAGES, *config.images.roots]
    if engine is not None:
        roots += recorded_roots(engine)
    return unique_roots(roots)


def ingest_roots(config: Config, items_file: str | Path) -> list[Path]:
    """Roots of one ``recsys ingest items FILE``: the file's folder (the first) and ``images.roots``."""
    return unique_roots([Path(items_file).resolve().parent, *config.images.roots])


def image_policy(config: Config, roots: Sequence[str | Path]) -> ImagePolicy:
    """The policy of ``config`` (``images`` and ``encoders.image`` download limits) over ``roots``."""
    img = config.images
    return ImagePolicy(
        roots=tuple(str(p) for p in unique_roots(roots)),
        allowed_hosts=frozenset(h.lower() for h in img.allowed_hosts),
        allow_private=img.allow_private,
        max_redirects=img.max_redirects,
        timeout_s=config.encoders.image.fetch_timeout_s,
        max_bytes=config.encoders.image.max_download_bytes,
    )
