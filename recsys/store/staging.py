"""Saving an artifact folder safely on one machine: exclusive root locks and staging folders.

An artifact (an index version, a feed model, CF factors) is written into ``<root>/<name>.tmp`` inside
:func:`staging_dir` and renamed to its final name; temporary folders that a killed save left behind are
removed by the next save (:func:`remove_stale_tmp`). :func:`root_lock` is the ``fcntl`` lock these and
index publishing (:mod:`recsys.index.publish`) use.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"
STAGING_LOCK = ".staging.lock"
"""Lock file held while a save writes into a temporary folder of the root (see :func:`staging_dir`)."""


@contextmanager
def root_lock(root: str | Path, name: str = ".lock") -> Iterator[None]:
    """An exclusive lock ``<root>/<name>`` (``fcntl.flock``) held by one process of this machine at a time.

    :func:`publish` and :func:`activate` switch the registry row and ``CURRENT`` under ``.lock``, so that
    concurrent publishers never leave them naming different versions; the serving processes' "find or
    build" step takes ``.build.lock`` (a build publishes: never nest the two), so that workers starting
    together build an index once; a save into a temporary folder holds ``STAGING_LOCK`` (taken before,
    never inside, ``.lock``). Not re-entrant."""
    import fcntl

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / name, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def remove_stale_tmp(root: str | Path) -> list[Path]:
    """Delete the temporary folders (``*.tmp``, e.g. ``.<version>.tmp``) that a killed save left in ``root``.

    Call it holding ``root_lock(root, STAGING_LOCK)``: every save into a temporary folder holds that lock
    (:func:`staging_dir`), so a folder still being written is never taken for a stale one.

    Returns:
        The removed folders.
    """
    removed = []
    for p in Path(root).glob("*" + TMP_SUFFIX):  # pathlib's glob matches names starting with '.' too
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
            log.info("removed the stale temporary folder %s (left by an interrupted save)", p)
    return removed


@contextmanager
def staging_dir(root: str | Path, name: str) -> Iterator[Path]:
    """``<root>/<name>`` (``name`` ends in ``.tmp``), a folder to save an artifact into and rename.

    Holds the root's staging lock for the whole block: stale temporary folders of earlier, killed saves
    (index publishing, ``recsys train``) are removed first, and nobody removes this one while it is being
    written. The caller renames the folder to its final name inside the block; if the block raises, the
    folder is removed. The lock is released when the process dies, so a killed save never blocks the next.
    """
    if not name.endswith(TMP_SUFFIX):
        raise ValueError(f"a staging folder name must end in {TMP_SUFFIX!r}, got {name!r}")
    root = Path(root)
    with root_lock(root, STAGING_LOCK):
        remove_stale_tmp(root)
        tmp = root / name
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
