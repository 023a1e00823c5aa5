"""Item pictures for people: the stored image of an item, resized and cached on disk.

Only an item's *stored* image reference is ever opened (the id comes from the request, the path from the
database), and only when it resolves (symlinks followed) inside the allowed image roots. Remote
references (URLs) are not fetched here: the caller shows a placeholder. Thumbnails are JPEGs under
``<data_dir>/cache/thumbs``, named by a hash of the resolved path, its size and modification time and
the requested size, so a changed picture gets a new name (and ETag) and old ones are simply not read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

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


def is_remote(ref: str) -> bool:
    return ref.lower().startswith(("http://", "https://"))


def image_roots(data_dir: Path, stored_refs: list[str]) -> list[Path]:
    """The folders a stored image may lie in: ``<data_dir>/images`` and the folders the catalogue's local
    images were ingested from (the folder each stored absolute path names, when it has no ``..`` part).

    Stand-in for ``recsys.encoders.access.image_roots(config, engine)`` (branch ``harden-io``), which decides
    the roots once for ingest, embedding and serving; swap it in when that branch is merged.
    """
    roots = [Path(data_dir) / "images"]
    for ref in stored_refs:
        if not ref or is_remote(ref):
            continue
        p = Path(ref)
        if p.is_absolute() and ".." not in p.parts:
            roots.append(p.parent)
    return roots


def _allowed(path: Path, roots: list[Path]) -> Path | None:
    """``path`` resolved (symlinks followed) when it is a file inside one of ``roots`` (also resolved), else ``None``.

    Stand-in for ``recsys.encoders.access.resolve_local_image(ref, roots)`` (branch ``harden-io``); the lead
    swaps the shared one in at merge.
    """
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not real.is_file():
        return None
    for root in roots:
        try:
            base = root.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if real.is_relative_to(base):
            return real
    return None


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
