"""Reading item images safely: a file path or an http(s) URL -> an RGB ``PIL.Image``.

Every way an image can be unusable becomes an :class:`~recsys.encoders.errors.ImageLoadError` with a
short ``reason`` (missing file, not an image, truncated, larger than the pixel limit, download
failure), so that callers such as the embedding job can record it and go on. The pixel limit is
checked on the header, before any pixel is decoded (decompression bombs).
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import IO

from PIL import Image, UnidentifiedImageError

from recsys.encoders.errors import (
    FETCH_FAILED,
    MISSING,
    NOT_AN_IMAGE,
    TOO_LARGE,
    TRUNCATED,
    UNREADABLE,
    ImageLoadError,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
_URL_PREFIXES = ("http://", "https://")


def is_url(source: str | Path) -> bool:
    return isinstance(source, str) and source.lower().startswith(_URL_PREFIXES)


def fetch_url(url: str, *, timeout: float = DEFAULT_TIMEOUT_S, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Download ``url`` (at most ``max_bytes``) or raise ``ImageLoadError(reason="fetch_failed")``."""
    import requests

    try:
        with requests.get(url, timeout=timeout, stream=True) as resp:
            if resp.status_code != 200:
                raise ImageLoadError(FETCH_FAILED, url, f"HTTP status {resp.status_code}")
            declared = resp.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise ImageLoadError(FETCH_FAILED, url, f"{declared} bytes is more than the limit of {max_bytes}")
            buf = bytearray()
            for chunk in resp.iter_content(chunk_size=64 * 1024):
                buf.extend(chunk)
                if len(buf) > max_bytes:
                    raise ImageLoadError(FETCH_FAILED, url, f"more than the limit of {max_bytes} bytes")
            return bytes(buf)
    except requests.RequestException as exc:
        raise ImageLoadError(FETCH_FAILED, url, f"{type(exc).__name__}: {exc}") from exc


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB; transparent pixels become white (product photos often have a transparent background)."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def decode_image(fp: IO[bytes], source: str, max_pixels: int) -> Image.Image:
    """Decode an open binary stream into an RGB image, refusing more than ``max_pixels`` pixels.

    Raises:
        ImageLoadError: ``not_an_image``, ``too_large`` or ``truncated``.
    """
    try:
        with warnings.catch_warnings():
            # Our own limit below is the guard; PIL's global one must not warn (warnings are errors in tests).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
    except UnidentifiedImageError as exc:
        raise ImageLoadError(NOT_AN_IMAGE, source, "not a recognised image format") from exc
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(TOO_LARGE, source, str(exc)) from exc
    except OSError as exc:  # e.g. a header that ends early
        raise ImageLoadError(TRUNCATED, source, f"cannot read the header: {exc}") from exc
    width, height = img.size
    if width * height > max_pixels:
        raise ImageLoadError(
            TOO_LARGE, source, f"{width}x{height} = {width * height:,} pixels, the limit is {max_pixels:,}"
        )
    try:
        img.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(TRUNCATED, source, f"image data is truncated or corrupt: {exc}") from exc
    return _to_rgb(img)


def load_image(
    source: str | Path,
    max_pixels: int,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Image.Image:
    """Read one image as RGB.

    Args:
        source: a file path, or an ``http(s)://`` URL (downloaded with ``requests``).
        max_pixels: largest ``width * height`` accepted, checked on the header before decoding.
        timeout: seconds allowed for each network operation of a download.
        max_bytes: largest download accepted.

    Raises:
        ImageLoadError: with ``reason`` ``missing`` (no such file), ``unreadable`` (a folder, no
            permission), ``not_an_image``, ``truncated`` (or otherwise corrupt), ``too_large``, or
            ``fetch_failed`` (URL only).
    """
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be > 0, got {max_pixels}")
    if is_url(source):
        url = str(source)
        return decode_image(io.BytesIO(fetch_url(url, timeout=timeout, max_bytes=max_bytes)), url, max_pixels)
    path = Path(source)
    try:
        fp = path.open("rb")
    except FileNotFoundError as exc:
        raise ImageLoadError(MISSING, str(source), "no such file") from exc
    except OSError as exc:
        raise ImageLoadError(UNREADABLE, str(source), exc.strerror or str(exc)) from exc
    with fp:
        return decode_image(fp, str(source), max_pixels)
