"""Reading item images safely: a file path or an http(s) URL -> an RGB ``PIL.Image``.

Every way an image can be unusable becomes an :class:`~recsys.encoders.errors.ImageLoadError` with a
short ``reason`` (missing file, not an image, truncated, larger than the pixel limit, download
failure, refused by the access policy), so that callers such as the embedding job can record it and go
on. The pixel limit is checked on the header, before any pixel is decoded (decompression bombs). Which
paths and URLs may be read is decided by :mod:`recsys.encoders.access`; downloads (overall deadline,
size cap, every redirect checked) are :mod:`recsys.encoders.fetch`.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import IO

from PIL import Image, UnidentifiedImageError

from recsys.encoders.access import ImagePolicy, is_url, resolve_local_image
from recsys.encoders.errors import (
    FETCH_FAILED,
    MISSING,
    NOT_AN_IMAGE,
    REFUSED,
    TOO_LARGE,
    TRUNCATED,
    UNREADABLE,
    ImageLoadError,
)
from recsys.errors import ImageAccessError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_BYTES = 20 * 1024 * 1024


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
    policy: ImagePolicy | None = None,
) -> Image.Image:
    """Read one image as RGB, under the access policy (:mod:`recsys.encoders.access`).

    Args:
        source: a file path, or an ``http(s)://`` URL (:func:`recsys.encoders.fetch.fetch_url`).
        max_pixels: largest ``width * height`` accepted, checked on the header before decoding.
        timeout: overall deadline of a download, seconds (used when ``policy`` is ``None``).
        max_bytes: largest download accepted (used when ``policy`` is ``None``).
        policy: what may be read. With a policy a path must lie under ``policy.roots``; without one
            (a file the caller chose, e.g. on the command line) any path is read. URLs always go through
            the policy's checks (without one: public addresses only, no allowlist).

    Raises:
        ImageLoadError: with ``reason`` ``missing`` (no such file), ``unreadable`` (a folder, no
            permission), ``not_an_image``, ``truncated`` (or otherwise corrupt), ``too_large``,
            ``fetch_failed`` (URL only: deadline, size, status, network) or ``refused`` (by the policy;
            nothing was read).
    """
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be > 0, got {max_pixels}")
    text = str(source)
    try:
        if isinstance(source, str) and is_url(source):
            from recsys.encoders.fetch import fetch_url

            pol = policy if policy is not None else ImagePolicy(timeout_s=timeout, max_bytes=max_bytes)
            return decode_image(io.BytesIO(fetch_url(source, pol)), text, max_pixels)
        path = resolve_local_image(source, policy.root_paths) if policy is not None else Path(source)
    except ImageAccessError as exc:  # an unresolvable host is a failed download, the rest a refusal
        raise ImageLoadError(FETCH_FAILED if exc.reason == "dns" else REFUSED, text, exc.detail) from None
    try:
        fp = path.open("rb")
    except FileNotFoundError as exc:
        raise ImageLoadError(MISSING, text, "no such file") from exc
    except OSError as exc:
        raise ImageLoadError(UNREADABLE, text, exc.strerror or str(exc)) from exc
    with fp:
        return decode_image(fp, text, max_pixels)
