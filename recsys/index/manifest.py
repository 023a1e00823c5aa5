"""On-disk layout of a saved retriever and its ``manifest.json``.

A saved retriever is a directory::

    manifest.json        written last: a directory without it is incomplete and never loaded
    vectors.npy          (n_base, dim) float32, the indexed rows
    buffer_ids.npy       side buffer (only when vectors were added or replaced after the build)
    buffer_vectors.npy
    neighbours_ids.npy   the neighbour table (recsys.index.neighbours), when one was built
    neighbours_scores.npy
    scann/               ScaNN's own serialisation (scann backend only; relative paths)

The manifest holds ``format``, ``backend``, ``params``, ``n`` (searchable rows), ``n_base``,
``n_buffered``, ``dim``, ``recall_at_10`` (``recall_at_k`` and ``recall_k`` when ``k`` differs),
``recall`` (how it was measured), ``build_seconds``, ``created`` (UTC ISO 8601), ``version``,
``recsys_version`` and ``config`` (the ``index`` section it was built with).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys.errors import ArtifactError

if TYPE_CHECKING:
    from recsys.index.base import BaseRetriever, SideBuffer
    from recsys.index.settings import IndexConfig

MANIFEST = "manifest.json"
FORMAT = 1
BUFFER_IDS = "buffer_ids.npy"
BUFFER_VECTORS = "buffer_vectors.npy"


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("recsys")
    except Exception:  # not installed as a distribution (source checkout)
        return "unknown"


def write_artifact_files(directory: Path, buffer: SideBuffer, neighbours: Any = None) -> None:
    """Write the side buffer (nothing when it is empty) and the neighbour table (when there is one)."""
    if neighbours is not None:
        from recsys.index.neighbours import save_neighbours

        save_neighbours(directory, neighbours)
    if len(buffer):
        np.save(directory / BUFFER_IDS, buffer.ids)
        np.save(directory / BUFFER_VECTORS, buffer.vectors)


def load_buffer(directory: Path, dim: int) -> SideBuffer:
    from recsys.index.base import SideBuffer

    manifest = read_manifest(directory)
    if not (directory / BUFFER_IDS).is_file():
        return SideBuffer.empty(dim)
    ids = np.load(directory / BUFFER_IDS).astype(np.int64)
    vectors = np.load(directory / BUFFER_VECTORS).astype(np.float32)
    n_base = int(manifest["n_base"])
    return SideBuffer(ids, vectors, int(manifest["n"]) - n_base, np.unique(ids[ids < n_base]))


def manifest_dict(retriever: BaseRetriever) -> dict[str, Any]:
    """The manifest of ``retriever`` as it stands (see the module docstring for the keys)."""
    info = dict(retriever.info)
    k = int(info.get("recall_k", 10))
    recall = info.get("recall_at_k")
    cfg = getattr(retriever, "cfg", None)
    out: dict[str, Any] = {
        "format": FORMAT,
        "backend": retriever.backend,
        "params": info.get("params", {}),
        "n": retriever.size,
        "n_base": retriever.n_base,
        "n_buffered": retriever.buffer_size,
        "dim": retriever.dim,
        "recall_at_10": recall if k == 10 else None,
        "recall_at_k": recall,
        "recall_k": k,
        "recall": info.get("recall", {}),
        "build_seconds": info.get("build_seconds"),
        "created": info.get("created") or dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "version": info.get("version"),
        "recsys_version": _package_version(),
        "config": cfg.model_dump(mode="json") if cfg is not None else {},
        "info": _jsonable(info),
    }
    return out


def write_manifest(directory: Path, retriever: BaseRetriever) -> dict[str, Any]:
    """Write ``manifest.json`` atomically (temp file, fsync, rename) and return it."""
    manifest = manifest_dict(retriever)
    tmp = directory / (MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, directory / MANIFEST)
    return manifest


def read_manifest(directory: str | Path, expect_backend: str | None = None) -> dict[str, Any]:
    """Read and check ``manifest.json``.

    Raises:
        ArtifactError: missing (incomplete artifact), unreadable, of another format or backend.
    """
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{directory} has no {MANIFEST}: not a saved index, or an incomplete one") from None
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read {path}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: unsupported index manifest format {manifest.get('format')!r}, expected {FORMAT}")
    if expect_backend is not None and manifest.get("backend") != expect_backend:
        raise ArtifactError(f"{path}: backend is {manifest.get('backend')!r}, expected {expect_backend!r}")
    return manifest


def config_of(manifest: dict[str, Any]) -> IndexConfig:
    """The ``index`` config a manifest was written with (keys this version does not know are ignored)."""
    from recsys.index.settings import IndexConfig

    raw = manifest.get("config") or {}
    return IndexConfig.model_validate({k: v for k, v in raw.items() if k in IndexConfig.model_fields})


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value
