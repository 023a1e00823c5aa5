"""The fused item embedding used downstream (similar items, hybrid recommendations, search)."""

from __future__ import annotations

import numpy as np

from recsys.align.model import l2_normalize


def fuse_embeddings(
    text: np.ndarray,
    image: np.ndarray,
    has_image: np.ndarray | None = None,
    text_weight: float = 0.5,
    image_weight: float = 0.5,
    has_text: np.ndarray | None = None,
) -> np.ndarray:
    """Weighted sum of aligned text and image vectors, L2-normalised.

    Args:
        text: ``(n, d)`` aligned text vectors (rows where ``has_text`` is false are ignored).
        image: ``(n, d)`` aligned image vectors (rows where ``has_image`` is false are ignored).
        has_image: ``(n,)`` bool; ``None`` = every item has an image. Items without one fall back to
            their text vector alone.
        text_weight / image_weight: ``>= 0``, not both 0. The inputs are L2-normalised first, so the
            weights are the shares of each modality.
        has_text: ``(n,)`` bool; ``None`` = every item has text. Items without text use the image alone.

    Returns:
        ``(n, d)`` float32, L2-normalised; an item with one modality gets that modality's vector whatever
        the weights; a row with neither is all zeros.
    """
    text = np.asarray(text, dtype=np.float32)
    image = np.asarray(image, dtype=np.float32)
    if text.ndim != 2 or text.shape != image.shape:
        raise ValueError(f"text and image must both be (n, d) with the same shape, got {text.shape} and {image.shape}")
    if text_weight < 0 or image_weight < 0 or text_weight + image_weight <= 0:
        raise ValueError(f"weights must be >= 0 and not both 0, got text {text_weight}, image {image_weight}")
    n = len(text)
    hi = np.ones(n, bool) if has_image is None else np.asarray(has_image, bool)
    ht = np.ones(n, bool) if has_text is None else np.asarray(has_text, bool)
    if hi.shape != (n,) or ht.shape != (n,):
        raise ValueError(f"has_image and has_text must be ({n},) booleans, got {hi.shape} and {ht.shape}")
    both = ht & hi
    wt = np.where(both, np.float32(text_weight), ht.astype(np.float32))[:, None]
    wi = np.where(both, np.float32(image_weight), hi.astype(np.float32))[:, None]
    fused = wt * np.nan_to_num(l2_normalize(text)) + wi * np.nan_to_num(l2_normalize(image))
    return l2_normalize(fused)
