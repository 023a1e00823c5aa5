"""Image preprocessing as a small picklable value, usable in data-loading worker processes.

Only PIL and numpy: a worker that decodes and resizes images does not need torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

PREPROCESS_REVISION = 2
"""Bumped whenever :class:`ImagePreprocess` computes different pixels for the same settings; it is part
of every image encoder's version, so vectors made the old way are never mixed with new ones."""

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


@dataclass(frozen=True)
class ImagePreprocess:
    """Resize the shorter side to ``resize``, centre-crop ``crop`` x ``crop``, scale to [0, 1], normalise.

    The usual ImageNet evaluation transform (torchvision's ``ImageClassification``, CLIP's processor).
    Calling it on an RGB ``PIL.Image`` returns a ``(3, crop, crop)`` float32 array.
    """

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    def __post_init__(self) -> None:
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation must be one of {sorted(_RESAMPLE)}, got {self.interpolation!r}")
        if not 0 < self.crop <= self.resize:
            raise ValueError(f"need 0 < crop <= resize, got crop={self.crop}, resize={self.resize}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (3, self.crop, self.crop)

    def __call__(self, image: Image.Image) -> np.ndarray:
        """RGB image -> ``(3, crop, crop)`` float32, normalised."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        w, h = image.size
        scale = self.resize / min(w, h)
        nw, nh = max(self.crop, round(w * scale)), max(self.crop, round(h * scale))
        left, top = (nw - self.crop) // 2, (nh - self.crop) // 2
        # Resize only the region that survives the centre crop (half the work of resize-then-crop).
        sx, sy = nw / w, nh / h
        box = (left / sx, top / sy, (left + self.crop) / sx, (top + self.crop) / sy)
        image = image.resize((self.crop, self.crop), _RESAMPLE[self.interpolation], box=box)
        arr = np.asarray(image, dtype=np.float32)  # (crop, crop, 3)
        std = np.asarray(self.std, dtype=np.float32)
        mean = np.asarray(self.mean, dtype=np.float32)
        arr = arr * (1.0 / (255.0 * std)) - mean / std
        return np.ascontiguousarray(arr.transpose(2, 0, 1))
