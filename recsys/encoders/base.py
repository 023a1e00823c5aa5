"""The encoder contract every text and image encoder implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np


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
