"""Frozen encoder features for a list of texts or image files, cached on disk.

Used by the evaluation (which reads a CSV, not the database) and by experiments: encoding 8,000
H&M images takes minutes on two cores, reading the cache milliseconds. The cache key is the encoder's
``version`` (weights hash) plus a hash of the inputs (texts, or image paths with their size and
modification time), so a changed model or file never reuses stale vectors.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys.encoders.base import Encoder

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""Called with ``(done, total)`` after each batch."""


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]


def _cache_file(cache_dir: Path, space: str, encoder: Encoder, key_parts: Sequence[str]) -> Path:
    h = hashlib.sha256()
    h.update(f"{space}\0{encoder.version}\0{encoder.dim}\0".encode())
    for part in key_parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return cache_dir / f"{space}-{_safe(encoder.version)}-{h.hexdigest()[:16]}.npy"


def _cached(path: Path | None, n: int, dim: int) -> np.ndarray | None:
    if path is None or not path.is_file():
        return None
    try:
        arr = np.load(path)
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable feature cache %s: %s", path, exc)
        return None
    if arr.shape != (n, dim) or arr.dtype != np.float32:
        log.warning("ignoring feature cache %s of shape %s, expected %s", path, arr.shape, (n, dim))
        return None
    log.info("features from cache %s", path)
    return arr


def _store(path: Path | None, arr: np.ndarray) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, arr)
    tmp.replace(path)


def _encode_batches(
    encoder: Encoder, inputs: Sequence[Any], batch_size: int, load: Callable[[Any], Any], progress: Progress | None
) -> np.ndarray:
    out = np.empty((len(inputs), encoder.dim), dtype=np.float32)
    started = time.perf_counter()
    for start in range(0, len(inputs), batch_size):
        chunk = [load(x) for x in inputs[start : start + batch_size]]
        out[start : start + len(chunk)] = encoder.encode(chunk)
        if progress is not None:
            progress(start + len(chunk), len(inputs))
    log.info("encoded %d inputs in %.1fs", len(inputs), time.perf_counter() - started)
    return out


def text_features(
    encoder: Encoder,
    texts: Sequence[str],
    cache_dir: Path | None = None,
    batch_size: int = 256,
    progress: Progress | None = None,
) -> np.ndarray:
    """``(n, encoder.dim)`` float32 vectors of ``texts``, read from / written to ``cache_dir`` when given."""
    path = None if cache_dir is None else _cache_file(Path(cache_dir), "text", encoder, texts)
    arr = _cached(path, len(texts), encoder.dim)
    if arr is None:
        arr = _encode_batches(encoder, list(texts), batch_size, lambda t: t, progress)
        _store(path, arr)
    return arr


def image_features(
    encoder: Encoder,
    paths: Sequence[str | Path],
    max_pixels: int,
    cache_dir: Path | None = None,
    batch_size: int = 64,
    progress: Progress | None = None,
) -> np.ndarray:
    """``(n, encoder.dim)`` float32 vectors of the image files, cached like :func:`text_features`.

    Raises:
        ImageLoadError: an image cannot be read (the protocol needs every image).
    """
    from recsys.encoders.images import load_image

    key = []
    for p in paths:
        try:
            st = Path(p).stat()
            key.append(f"{p}|{st.st_size}|{st.st_mtime_ns}")
        except OSError:
            key.append(f"{p}|missing")
    path = None if cache_dir is None else _cache_file(Path(cache_dir), "image", encoder, key)
    arr = _cached(path, len(paths), encoder.dim)
    if arr is None:
        arr = _encode_batches(encoder, list(paths), batch_size, lambda p: load_image(p, max_pixels), progress)
        _store(path, arr)
    return arr
