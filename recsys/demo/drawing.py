"""Product pictures for the demo catalogue: a category silhouette filled with a colour, a shape printed on it.

Everything is drawn with Pillow at twice the target size and reduced, so edges are smooth. Pure: a
picture depends only on its arguments (the random generator supplies the jitter).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

RGB = tuple[int, int, int]
Box = tuple[float, float, float, float]
"""``(x0, y0, x1, y1)`` in pixels."""

_SUPERSAMPLE = 2
_ANY_INK = [0] + [255] * 255


def _at(box: Box, fx: float, fy: float) -> tuple[float, float]:
    """The point at fractions ``(fx, fy)`` of ``box``."""
    x0, y0, x1, y1 = box
    return x0 + fx * (x1 - x0), y0 + fy * (y1 - y0)


def _sub(box: Box, fx0: float, fy0: float, fx1: float, fy1: float) -> Box:
    return (*_at(box, fx0, fy0), *_at(box, fx1, fy1))


# --- silhouettes: draw the product's outline (255) on a mask, return the box where the print goes ---


def _mug(d: ImageDraw.ImageDraw, b: Box) -> Box:
    w = b[2] - b[0]
    d.ellipse(_sub(b, 0.55, 0.28, 0.98, 0.78), fill=255)
    d.ellipse(_sub(b, 0.64, 0.38, 0.88, 0.68), fill=0)
    d.rounded_rectangle(_sub(b, 0.02, 0.12, 0.74, 0.98), radius=0.08 * w, fill=255)
    return _sub(b, 0.1, 0.24, 0.66, 0.86)


def _tshirt(d: ImageDraw.ImageDraw, b: Box) -> Box:
    pts = [(0.36, 0.02), (0.5, 0.1), (0.64, 0.02), (1.0, 0.2), (0.88, 0.44), (0.78, 0.36), (0.78, 1.0),
           (0.22, 1.0), (0.22, 0.36), (0.12, 0.44), (0.0, 0.2)]
    d.polygon([_at(b, x, y) for x, y in pts], fill=255)
    return _sub(b, 0.3, 0.24, 0.7, 0.72)


def _poster(d: ImageDraw.ImageDraw, b: Box) -> Box:
    d.rectangle(_sub(b, 0.14, 0.0, 0.86, 1.0), fill=255)
    return _sub(b, 0.2, 0.08, 0.8, 0.92)


def _cap(d: ImageDraw.ImageDraw, b: Box) -> Box:
    d.pieslice(_sub(b, 0.05, 0.2, 0.8, 1.0), 180, 360, fill=255)
    d.rectangle(_sub(b, 0.05, 0.58, 0.8, 0.7), fill=255)
    d.ellipse(_sub(b, 0.45, 0.56, 1.0, 0.76), fill=255)
    return _sub(b, 0.24, 0.28, 0.62, 0.58)


def _tote_bag(d: ImageDraw.ImageDraw, b: Box) -> Box:
    w = b[2] - b[0]
    d.arc(_sub(b, 0.28, 0.0, 0.72, 0.6), 180, 360, fill=255, width=max(2, int(0.05 * w)))
    d.polygon([_at(b, x, y) for x, y in [(0.12, 0.3), (0.88, 0.3), (0.94, 1.0), (0.06, 1.0)]], fill=255)
    return _sub(b, 0.24, 0.42, 0.76, 0.92)


def _sticker(d: ImageDraw.ImageDraw, b: Box) -> Box:
    d.ellipse(_sub(b, 0.04, 0.04, 0.96, 0.96), fill=255)
    return _sub(b, 0.2, 0.2, 0.8, 0.8)


def _cushion(d: ImageDraw.ImageDraw, b: Box) -> Box:
    corners = [(0.04, 0.04), (0.96, 0.04), (0.96, 0.96), (0.04, 0.96)]
    pts: list[tuple[float, float]] = []
    for (ax, ay), (bx, by) in zip(corners, corners[1:] + corners[:1], strict=True):
        nx, ny = -(by - ay), bx - ax  # inward normal (clockwise corners in image coordinates)
        for t in np.linspace(0.0, 1.0, 9)[:-1]:
            sag = 0.07 * math.sin(math.pi * t)
            pts.append(_at(b, ax + t * (bx - ax) + sag * nx, ay + t * (by - ay) + sag * ny))
    d.polygon(pts, fill=255)
    return _sub(b, 0.22, 0.22, 0.78, 0.78)


def _notebook(d: ImageDraw.ImageDraw, b: Box) -> Box:
    w = b[2] - b[0]
    d.rounded_rectangle(_sub(b, 0.16, 0.02, 0.88, 0.98), radius=0.03 * w, fill=255)
    for fy in np.linspace(0.08, 0.92, 8):
        d.ellipse(_sub(b, 0.19, fy - 0.018, 0.226, fy + 0.018), fill=0)
    return _sub(b, 0.3, 0.14, 0.82, 0.86)


SILHOUETTES: dict[str, Callable[[ImageDraw.ImageDraw, Box], Box]] = {
    "mug": _mug,
    "t-shirt": _tshirt,
    "poster": _poster,
    "cap": _cap,
    "tote bag": _tote_bag,
    "sticker": _sticker,
    "cushion": _cushion,
    "notebook": _notebook,
}


# --- patterns: draw the print (255) inside the print box ---


def _motif_frame(b: Box, rng: np.random.Generator, scale: float) -> tuple[float, float, float]:
    """Centre and radius of a single motif, jittered a little inside ``b``."""
    cx, cy = _at(b, 0.5 + rng.uniform(-0.05, 0.05), 0.5 + rng.uniform(-0.05, 0.05))
    return cx, cy, scale * min(b[2] - b[0], b[3] - b[1]) / 2


def _circle(d: ImageDraw.ImageDraw, b: Box, rng: np.random.Generator) -> None:
    cx, cy, r = _motif_frame(b, rng, 0.8)
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)


def _square(d: ImageDraw.ImageDraw, b: Box, rng: np.random.Generator) -> None:
    cx, cy, r = _motif_frame(b, rng, 0.7)
    d.rectangle((cx - r, cy - r, cx + r, cy + r), fill=255)


def _regular(cx: float, cy: float, radii: list[float], phase: float) -> list[tuple[float, float]]:
    n = len(radii)
    return [(cx + r * math.cos(phase + 2 * math.pi * k / n), cy + r * math.sin(phase + 2 * math.pi * k / n))
            for k, r in enumerate(radii)]


def _triangle(d: ImageDraw.ImageDraw, b: Box, rng: np.random.Generator) -> None:
    cx, cy, r = _motif_frame(b, rng, 0.85)
    d.polygon(_regular(cx, cy + 0.15 * r, [r] * 3, -math.pi / 2), fill=255)


def _star(d: ImageDraw.ImageDraw, b: Box, rng: np.random.Generator) -> None:
    cx, cy, r = _motif_frame(b, rng, 0.9)
    d.polygon(_regular(cx, cy + 0.06 * r, [r, 0.42 * r] * 5, -math.pi / 2), fill=255)


def _heart(d: ImageDraw.ImageDraw, b: Box, rng: np.random.Generator) -> None:
    cx, cy, r = _motif_frame(b, rng, 0.8)
    lobe = 0.5 * r
    for sx in (-1, 1):
        lx, ly = cx + sx * lobe * 0.95, cy - 0.3 * r
        d.ellipse((lx - lobe, ly - lobe, lx + lobe, ly + lobe), fill=255)
    d.polygon([(cx - 1.9 * lobe, cy - 0.15 * r), (cx + 1.9 * lobe, cy - 0.15 * r), (cx, cy + r)], fill=255)


def _stripes(d: ImageDraw.ImageDraw, b: Box, rng: np.random.Generator) -> None:
    period = min(b[2] - b[0], b[3] - b[1]) / 4.5
    y = b[1] + rng.uniform(0, period)
    while y < b[3]:
        d.rectangle((b[0], y, b[2], min(b[3], y + period / 2)), fill=255)
        y += period


def _dots(d: ImageDraw.ImageDraw, b: Box, rng: np.random.Generator) -> None:
    step = min(b[2] - b[0], b[3] - b[1]) / 3.6
    r = 0.24 * step
    ox, oy = rng.uniform(0, step, size=2)
    for row, y in enumerate(np.arange(b[1] + oy, b[3], step)):
        for x in np.arange(b[0] + ox + (step / 2 if row % 2 else 0.0), b[2], step):
            d.ellipse((x - r, y - r, x + r, y + r), fill=255)


def _zigzag(d: ImageDraw.ImageDraw, b: Box, rng: np.random.Generator) -> None:
    h = min(b[2] - b[0], b[3] - b[1])
    amp, step, width = h / 10, h / 6, max(2, int(h / 16))
    for y in np.arange(b[1] + rng.uniform(0.5, 1.0) * amp, b[3], 3.2 * amp):
        xs = np.arange(b[0] - step, b[2] + step, step)
        d.line([(float(x), float(y + (amp if k % 2 else -amp))) for k, x in enumerate(xs)], fill=255, width=width)


PATTERNS: dict[str, Callable[[ImageDraw.ImageDraw, Box, np.random.Generator], None]] = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "star": _star,
    "heart": _heart,
    "stripes": _stripes,
    "dots": _dots,
    "zigzag": _zigzag,
}


def ink_for(fill: RGB) -> RGB:
    """A print colour that contrasts with ``fill``: near-black on light colours, near-white on dark ones."""
    luminance = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    return (28, 28, 32) if luminance > 150 else (250, 250, 246)


def _jitter(rgb: RGB, rng: np.random.Generator, amount: int) -> RGB:
    r, g, b = (int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)
    return r, g, b


def render_product(category: str, fill: RGB, pattern: str, size: int, rng: np.random.Generator) -> Image.Image:
    """Draw one product picture.

    Args:
        category: a key of ``SILHOUETTES``.
        fill: the product's colour.
        pattern: a key of ``PATTERNS``, printed in a contrasting colour.
        size: side of the square picture in pixels.
        rng: source of the small variations (background tint, position, scale, colour).

    Returns:
        ``size x size`` RGB image.
    """
    if category not in SILHOUETTES:
        raise ValueError(f"category must be one of {sorted(SILHOUETTES)}, got {category!r}")
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {sorted(PATTERNS)}, got {pattern!r}")
    s = size * _SUPERSAMPLE
    background = _jitter((238, 238, 236), rng, 14)
    canvas = Image.new("RGB", (s, s), background)

    margin = s * rng.uniform(0.07, 0.14)
    dx, dy = rng.uniform(-0.05, 0.05, size=2) * s
    box: Box = (margin + dx, margin + dy, s - margin + dx, s - margin + dy)

    body = Image.new("L", (s, s), 0)
    print_box = SILHOUETTES[category](ImageDraw.Draw(body), box)
    grown = body.filter(ImageFilter.BoxBlur(2)).point(_ANY_INK)  # dilated by 2 px; BoxBlur is O(pixels)
    outline = ImageChops.subtract(grown, body)
    colour = _jitter(fill, rng, 12)
    canvas.paste(colour, mask=body)
    canvas.paste(tuple(int(0.55 * c) for c in colour), mask=outline)

    ink = Image.new("L", (s, s), 0)
    PATTERNS[pattern](ImageDraw.Draw(ink), print_box, rng)
    canvas.paste(ink_for(fill), mask=ImageChops.multiply(ink, body))
    return canvas.reduce(_SUPERSAMPLE)
