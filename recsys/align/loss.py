"""Symmetric InfoNCE (CLIP's contrastive loss). Imports torch: load this module only to train."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def symmetric_infonce(
    text: torch.Tensor, image: torch.Tensor, logit_scale: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean of the text→image and image→text cross-entropies over a batch of pairs.

    Args:
        text: ``(b, d)`` L2-normalised text vectors; row ``i`` pairs with ``image[i]``.
        image: ``(b, d)`` L2-normalised image vectors.
        logit_scale: scalar, ``1 / temperature`` (already exponentiated and clamped).
        label_smoothing: passed to :func:`torch.nn.functional.cross_entropy`.

    Returns:
        Scalar loss; ``log(b)`` for uninformative vectors, 0 for perfectly separated ones.
    """
    if text.shape != image.shape or text.ndim != 2:
        raise ValueError(f"text and image must both be (b, d) with the same shape, got {tuple(text.shape)} and {tuple(image.shape)}")
    logits = logit_scale * text @ image.T  # (b, b)
    target = torch.arange(logits.shape[0], device=logits.device)
    t2i = F.cross_entropy(logits, target, label_smoothing=label_smoothing)
    i2t = F.cross_entropy(logits.T, target, label_smoothing=label_smoothing)
    return 0.5 * (t2i + i2t)
