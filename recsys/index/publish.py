"""Versioned index artifacts: atomic publish, the active version, and hot reload.

Layout of an index root (e.g. ``<artifacts>/index-items``)::

    20250101T120000Z-3f2a1c/    one saved retriever per version (see recsys.index.manifest)
    20250102T083000Z-9b0d4e/
    CURRENT                     the active version's name, one line

Publishing saves into ``<version>.tmp`` (under the root's staging lock, after removing the temporary
folders a killed save left behind: :func:`recsys.store.staging.staging_dir`, also used by ``recsys train``), fsyncs it, renames it to ``<version>`` (a complete
directory appears at once), registers it in SQL when an engine is given (the registry row of
``kind`` becomes the active one), and finally replaces ``CURRENT`` with ``os.replace`` (atomic on
POSIX and Windows). A build or save that fails leaves no ``<version>`` directory and ``CURRENT``
untouched, so the previous version stays active; readers never see a half-written one. A process
that serves an index holds an :class:`IndexHandle` and calls :meth:`IndexHandle.refresh_if_changed`
(one ``stat`` per ``check_interval_s``) to pick up a newer active version without a restart.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.errors import ArtifactError
from recsys.index.factory import load_retriever
from recsys.index.manifest import MANIFEST, read_manifest
from recsys.store.staging import STAGING_LOCK, TMP_SUFFIX, remove_stale_tmp, root_lock, staging_dir

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from recsys.index.base import Retriever

log = logging.getLogger(__name__)

CURRENT = "CURRENT"


def new_version() -> str:
    """A sortable, unique version name: UTC time plus 6 random hex digits."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _check_version(version: str) -> str:
    bad = not version or version == CURRENT or version.startswith(".") or version.endswith(TMP_SUFFIX)
    if bad or any(c in version for c in "/\\\n"):
        raise ValueError(f"invalid index version name {version!r}: use letters, digits, '-', '_' or '.'")
    return version


def _fsync_tree(path: Path) -> None:
    for sub in sorted(path.rglob("*")):
        if sub.is_file():
            with open(sub, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_current(root: Path, version: str) -> None:
    tmp = root / f"{CURRENT}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(version + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, root / CURRENT)
    _fsync_dir(root)


def metrics_of(manifest: dict[str, Any]) -> dict[str, Any]:
    """The registry ``metrics`` of an index manifest."""
    keys = ("recall_at_10", "recall_at_k", "recall_k", "n", "dim", "build_seconds", "backend")
    return {k: manifest.get(k) for k in keys}


def publish(
    retriever: Retriever,
    root: str | Path,
    *,
    version: str | None = None,
    engine: Engine | None = None,
    kind: str | None = None,
) -> str:
    """Save ``retriever`` as a new version under ``root`` and make it the active one.

    Args:
        retriever: a built retriever (its ``info`` goes into the manifest).
        root: the index root folder (created).
        version: default :func:`new_version`.
        engine, kind: when given, the version is registered in the SQL ``artifacts`` table as the
            active one of ``kind`` (e.g. ``"index-items"``) with the manifest's config and metrics,
            before ``CURRENT`` is switched; if that fails, the new directory is removed and
            ``CURRENT`` is left as it was.

    Returns:
        The version name.

    Raises:
        ArtifactError: the version exists already.
    """
    if (engine is None) != (kind is None):
        raise ValueError("publish needs both engine and kind to register the index, or neither")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    version = _check_version(version or new_version())
    final = root / version
    if final.exists():
        raise ArtifactError(f"index version {version!r} already exists in {root}")
    retriever.info["version"] = version
    try:
        with staging_dir(root, version + TMP_SUFFIX) as tmp:
            retriever.save(tmp)
            _fsync_tree(tmp)
            os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        retriever.info.pop("version", None)
        raise
    manifest = read_manifest(final)
    with root_lock(root):
        if engine is not None and kind is not None:
            from recsys.store.artifacts import register_artifact

            try:
                register_artifact(engine, kind, version, str(final.resolve()), manifest.get("config"),
                                  metrics_of(manifest))
            except BaseException:
                shutil.rmtree(final, ignore_errors=True)  # never active, never registered: leave no orphan
                retriever.info.pop("version", None)
                raise
        _write_current(root, version)
    log.info("published index %s in %s (%s, n=%s)", version, root, manifest["backend"], manifest["n"])
    return version


def activate(root: str | Path, version: str, *, engine: Engine | None = None, kind: str | None = None) -> None:
    """Make an existing, complete version the active one (e.g. a roll back)."""
    root = Path(root)
    read_manifest(root / _check_version(version))  # raises when missing or incomplete
    with root_lock(root):
        if engine is not None and kind is not None:
            from recsys.store.artifacts import activate_artifact

            activate_artifact(engine, kind, version)
        _write_current(root, version)


def active_version(root: str | Path) -> str | None:
    """The active version under ``root``, or ``None`` when nothing was published."""
    try:
        text = (Path(root) / CURRENT).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return text or None


def list_versions(root: str | Path) -> list[str]:
    """Complete versions under ``root`` (those with a manifest), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        p.name for p in root.iterdir() if p.is_dir() and not p.name.endswith(TMP_SUFFIX) and (p / MANIFEST).is_file()
    )


def load_active(root: str | Path, *, mmap: bool = True) -> Retriever:
    """Load the active version under ``root``.

    Raises:
        ArtifactError: nothing published, or the active version is missing or incomplete.
    """
    version = active_version(root)
    if version is None:
        raise ArtifactError(f"no index published in {root} (no {CURRENT} file); build one first")
    return load_retriever(Path(root) / version, mmap=mmap)


def prune(root: str | Path, keep: int = 3) -> list[str]:
    """Delete all but the newest ``keep`` versions and stale ``.tmp`` folders; never the active one.

    Returns:
        The removed version names.
    """
    root = Path(root)
    active = active_version(root)
    versions = [v for v in list_versions(root) if v != active]
    doomed = versions[: max(0, len(versions) - max(keep - (active is not None), 0))]
    for v in doomed:
        shutil.rmtree(root / v, ignore_errors=True)
    with root_lock(root, STAGING_LOCK):
        remove_stale_tmp(root)
    return doomed


class IndexHandle:
    """The active retriever under ``root``, reloaded when ``CURRENT`` changes.

    Reading :attr:`retriever` is lock-free; a reload builds the new retriever first and swaps the
    reference afterwards, so searches in other threads keep using the old one until then. Vectors
    added to the old retriever's side buffer are not carried over: the owner re-adds items newer than
    the new index (its manifest's ``created``) after a refresh.

    Args:
        root: the index root.
        check_interval_s: :meth:`refresh_if_changed` looks at ``CURRENT`` at most this often.
        loader: loads a version directory (default :func:`recsys.index.factory.load_retriever`).

    Raises:
        ArtifactError: nothing is published under ``root`` yet.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        check_interval_s: float = 1.0,
        loader: Callable[[Path], Retriever] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = Path(root)
        self.check_interval_s = check_interval_s
        self._loader = loader or load_retriever
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp = self._current_stamp()
        version = active_version(self.root)
        if version is None:
            raise ArtifactError(f"no index published in {self.root} (no {CURRENT} file); build one first")
        self._retriever = self._loader(self.root / version)
        self._version = version
        self._failed: tuple[Any, ...] | None = None
        self._next_check = self._clock() + check_interval_s

    @property
    def retriever(self) -> Retriever:
        return self._retriever

    @property
    def version(self) -> str:
        return self._version

    def _current_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.root / CURRENT)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def refresh_if_changed(self, *, force: bool = False) -> bool:
        """Load the active version if ``CURRENT`` changed; ``True`` when a new retriever was swapped in.

        Cheap enough for every request: at most one ``stat`` per ``check_interval_s`` (``force``
        skips the interval). A version that fails to load is logged and not retried until
        ``CURRENT`` changes again; the old retriever keeps serving. Only one thread loads at a time.
        """
        now = self._clock()
        if not force and now < self._next_check:
            return False
        if not self._lock.acquire(blocking=False):
            return False
        try:
            self._next_check = now + self.check_interval_s
            stamp = self._current_stamp()
            if stamp == self._stamp or stamp is None or stamp == self._failed:
                return False
            version = active_version(self.root)
            if version is None or version == self._version:
                self._stamp = stamp
                return False
            try:
                retriever = self._loader(self.root / version)
            except Exception:
                log.exception("cannot load index version %s from %s; keeping %s", version, self.root, self._version)
                self._failed = stamp
                return False
            self._retriever, self._version, self._stamp = retriever, version, stamp
            log.info("index in %s switched to version %s", self.root, version)
            return True
        finally:
            self._lock.release()
