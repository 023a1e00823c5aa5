"""The encoder contract every text and image encoder implements."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import torch
    from PIL import Image


@runtime_checkable
class Encoder(Protocol):
    """Turns a batch of inputs into vectors.

    Attributes:
        name: what the user configured (a model name or path).
        version: ``name`` plus a short hash of the weights; vectors from different versions are never mixed.
        dim: output dimension.
    """

    name: str
    version: str
    dim: int

    def encode(self, batch: Sequence[Any]) -> np.ndarray:
        """Encode a batch: texts (``str``) or images (``PIL.Image.Image`` in RGB).

        Returns:
            ``(len(batch), dim)`` float32, each row L2-normalised.
        """
        ...


@runtime_checkable
class ImageEncoder(Encoder, Protocol):
    """An :class:`Encoder` of RGB images whose preprocessing can run elsewhere (worker processes).

    ``encode(images) == encode_tensors(np.stack([preprocess(im) for im in images]))``.

    Attributes:
        preprocess: picklable callable, RGB ``PIL.Image`` -> ``(3, H, W)`` float32 array, normalised
            for this model (an :class:`recsys.encoders.preprocess.ImagePreprocess`).
    """

    preprocess: Callable[[Image.Image], np.ndarray]

    def encode(self, batch: Sequence[Image.Image]) -> np.ndarray: ...

    def encode_tensors(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Encode preprocessed images ``(n, 3, H, W)`` float32 -> ``(n, dim)`` float32, L2-normalised."""
        ...
