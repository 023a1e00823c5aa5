"""Item pictures for people: the stored image of an item, resized and cached on disk.

Only an item's *stored* image reference is ever opened (the id comes from the request, the path from the
database), and only when it resolves (symlinks followed) inside the allowed image roots
(:func:`recsys.store.image_roots.image_roots`). Remote
references (URLs) are not fetched here: the caller shows a placeholder. Thumbnails are JPEGs under
``<data_dir>/cache/thumbs``, named by a hash of the resolved path, its size and modification time and
the requested size, so a changed picture gets a new name (and ETag) and old ones are simply not read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from recsys.encoders.access import resolve_local_image
from recsys.errors import ImageAccessError

log = logging.getLogger(__name__)

SIZES = (96, 160, 320, 640)
"""Thumbnail edge lengths (pixels) that may be asked for; a fixed set keeps the cache bounded."""

PLACEHOLDER_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 160 160" width="160" height="160" role="img">'
    "<title>no picture</title>"
    '<rect width="160" height="160" fill="#eef0f3"/>'
    '<path d="M50 104l22-28 16 20 10-12 22 20z" fill="#c3c8d0"/><circle cx="62" cy="62" r="9" fill="#c3c8d0"/>'
    '<text x="80" y="136" font-family="sans-serif" font-size="13" text-anchor="middle" fill="#6b7280">no picture</text>'
    "</svg>"
)


@dataclass(frozen=True)
class Thumbnail:
    path: Path
    etag: str


def local_source(ref: str, roots: Sequence[str | Path]) -> Path | None:
    """The stored local image ``ref`` resolved (symlinks followed) when it is a file inside one of ``roots``
    (:func:`recsys.encoders.access.resolve_local_image`, the policy ingest and embedding use), else ``None``."""
    try:
        real = resolve_local_image(ref, roots)
    except ImageAccessError:
        return None
    return real if real.is_file() else None


def thumbnail(source: Path, size: int, cache_dir: Path, max_pixels: int) -> Thumbnail | None:
    """A JPEG of ``source`` fitted into ``size`` x ``size`` (cached), or ``None`` when it cannot be read as an
    image (missing, truncated, not an image, more than ``max_pixels`` pixels)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {list(SIZES)}, got {size}")
    try:
        st = source.stat()
    except OSError:
        return None
    key = hashlib.sha256(f"{source}|{st.st_size}|{st.st_mtime_ns}|{size}".encode()).hexdigest()[:32]
    out = cache_dir / key[:2] / f"{key}.jpg"
    if out.is_file():
        return Thumbnail(out, key)
    data = _render(source, size, max_pixels)
    if data is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, out)  # atomic: a concurrent reader sees the whole file or none
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Thumbnail(out, key)


def _render(source: Path, size: int, max_pixels: int) -> bytes | None:
    import io

    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(source) as img:
            w, h = img.size
            if w * h > max_pixels:
                log.warning("media: %s has %dx%d pixels, above the limit of %d; placeholder served", source, w, h, max_pixels)
                return None
            img.draft("RGB", (size, size))  # JPEG: decode at a reduced scale directly
            img = ImageOps.exif_transpose(img)
            img.thumbnail((size, size), Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            img.convert("RGB").save(buf, format="JPEG", quality=85, optimize=True)
            return buf.getvalue()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        log.warning("media: cannot read %s as an image (%s); placeholder served", source, exc)
        return None
