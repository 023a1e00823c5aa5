"""CLIP (transformers ``CLIPModel``): both towers as encoders, selected by the name ``clip:<model>``.

``clip:openai/clip-vit-base-patch32`` gives a text encoder and an image encoder whose vectors live in
one joint space (the model's projection dimension). The model is downloaded by transformers on first
use, so this is for online users; any local folder written by ``CLIPModel.save_pretrained`` works too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from recsys.encoders.errors import EncoderError
from recsys.encoders.image import TorchImageEncoder
from recsys.encoders.preprocess import ImagePreprocess

log = logging.getLogger(__name__)

CLIP_PREFIX = "clip:"
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def is_clip_name(name: str) -> bool:
    return name.startswith(CLIP_PREFIX)


def clip_model_name(name: str) -> str:
    """``"clip:openai/clip-vit-base-patch32"`` -> ``"openai/clip-vit-base-patch32"``."""
    if not is_clip_name(name) or not name[len(CLIP_PREFIX) :]:
        raise EncoderError(f"a CLIP encoder name looks like 'clip:<model name or folder>', got {name!r}")
    return name[len(CLIP_PREFIX) :]


@dataclass
class CLIPBundle:
    """A loaded CLIP model with its tokenizer and image preprocessing; shared by both towers."""

    name: str
    model: Any
    tokenizer: Any
    preprocess: ImagePreprocess


def load_clip(name: str) -> CLIPBundle:
    """Load ``clip:<model>`` (hub name or local folder).

    Raises:
        EncoderError: the model, tokenizer or image processor cannot be loaded.
    """
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no weight-loading bars in command output and logs

    path = clip_model_name(name)
    try:
        model = CLIPModel.from_pretrained(path).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        try:
            processor = CLIPImageProcessor.from_pretrained(path)
        except OSError:
            processor = None
    except (OSError, ValueError) as exc:
        raise EncoderError(f"cannot load CLIP model {path!r}: {exc}") from exc
    log.info("loaded CLIP model %s", path)
    return CLIPBundle(name, model, tokenizer, clip_preprocess(processor, model.config.vision_config.image_size))


def clip_preprocess(processor: Any, image_size: int) -> ImagePreprocess:
    """The image processor's resize / crop / mean / std as an :class:`ImagePreprocess`."""
    if processor is None:
        return ImagePreprocess(image_size, image_size, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, "bicubic")
    size = processor.size or {}
    crop = processor.crop_size or {}
    resize = int(size.get("shortest_edge") or size.get("height") or image_size)
    crop_px = int(crop.get("height") or image_size)
    return ImagePreprocess(
        resize=max(resize, crop_px),
        crop=crop_px,
        mean=tuple(float(v) for v in processor.image_mean),  # type: ignore[arg-type]
        std=tuple(float(v) for v in processor.image_std),  # type: ignore[arg-type]
        interpolation="bicubic",
    )


class CLIPTextEncoder:
    """CLIP's text tower + projection: ``(n, projection_dim)`` float32, L2-normalised."""

    def __init__(self, bundle: CLIPBundle, *, device: str = "cpu", batch_size: int = 64, max_length: int = 77) -> None:
        import torch
        from torch import nn

        self.name = bundle.name
        self.device = torch.device(device)
        self.tokenizer = bundle.tokenizer
        self.batch_size = batch_size
        self.max_length = min(max_length, int(bundle.model.config.text_config.max_position_embeddings))
        self.tower = nn.ModuleDict(
            {"text_model": bundle.model.text_model, "text_projection": bundle.model.text_projection}
        ).eval().to(self.device)
        self.dim = int(bundle.model.config.projection_dim)

    @cached_property
    def version(self) -> str:
        from recsys.encoders._torch import weights_fingerprint

        return f"{self.name}@{weights_fingerprint(self.tower, self.max_length)}"

    def encode(self, batch: Sequence[str]) -> np.ndarray:
        """``n`` texts -> ``(n, dim)`` float32, L2-normalised."""
        import torch

        from recsys.encoders._torch import l2_normalize

        texts = [str(t) for t in batch]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            with torch.inference_mode():
                pooled = self.tower["text_model"](
                    input_ids=enc["input_ids"].to(self.device), attention_mask=enc["attention_mask"].to(self.device)
                ).pooler_output
                out[start : start + self.batch_size] = l2_normalize(self.tower["text_projection"](pooled))
        return out


def _vision_module(model: Any) -> Any:
    from torch import nn

    class CLIPVisionFeatures(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vision_model = model.vision_model
            self.visual_projection = model.visual_projection

        def forward(self, pixel_values: Any) -> Any:
            return self.visual_projection(self.vision_model(pixel_values=pixel_values).pooler_output)

    return CLIPVisionFeatures()


def clip_image_encoder(bundle: CLIPBundle, *, device: str = "cpu", batch_size: int = 64) -> TorchImageEncoder:
    """CLIP's vision tower + projection as an image encoder (same space as :class:`CLIPTextEncoder`)."""
    return TorchImageEncoder(
        _vision_module(bundle.model),
        bundle.preprocess,
        bundle.name,
        device=device,
        batch_size=batch_size,
        channels_last=False,
        dim=int(bundle.model.config.projection_dim),
    )
