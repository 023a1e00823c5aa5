"""The H&M cross-modal protocol end to end: CSV → frozen features (cached) → alignment → metrics.

IO lives here (files, encoders); the protocol itself (split, training, metrics) is the pure
:func:`recsys.evaluation.crossmodal.run_protocol`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from recsys.align.settings import AlignConfig
from recsys.encoders.settings import EncodersConfig
from recsys.evaluation.crossmodal import (
    LINEAR_BASELINE,
    PROTOCOL_N_TEST,
    ProtocolResult,
    load_hm_items,
    protocol_split,
    run_protocol,
    validation_split,
)

log = logging.getLogger(__name__)


def _bar(enabled: bool, desc: str) -> Callable[[int, int], None] | None:
    if not enabled:
        return None
    from tqdm import tqdm

    state: dict[str, tqdm] = {}

    def update(done: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = tqdm(total=total, desc=desc, unit="item")
        state["bar"].update(done - state["bar"].n)
        if done >= total:
            state["bar"].close()

    return update


def hm_features(
    items_path: Path,
    encoders: EncodersConfig,
    cache_dir: Path | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, str, str]:
    """Frozen text and image vectors of every item of an H&M ``items.csv``, in file order.

    Returns:
        ``(text (n, d_text), image (n, d_image), text_encoder_version, image_encoder_version)``.
    """
    from recsys.align.features import image_features, text_features
    from recsys.encoders.factory import build_image_encoder, build_text_encoder

    items = load_hm_items(items_path)
    text_enc = build_text_encoder(encoders.text, encoders.device)
    text = text_features(text_enc, items.texts, cache_dir, batch_size=encoders.text.batch_size * 4,
                         progress=_bar(progress, "text"))
    text_version = text_enc.version
    del text_enc
    image_enc = build_image_encoder(encoders.image, encoders.device)
    image = image_features(image_enc, items.images, encoders.image.max_pixels, cache_dir,
                           batch_size=encoders.image.batch_size, progress=_bar(progress, "images"))
    return text, image, text_version, image_enc.version


def hm_protocol(
    items_path: Path,
    encoders: EncodersConfig,
    config: AlignConfig | None = None,
    *,
    split: str = "test",
    cache_dir: Path | None = None,
    progress: bool = False,
    baseline: bool = False,
) -> ProtocolResult:
    """Run the protocol of EVALUATION-hm.md.

    Args:
        split: ``test`` (the protocol: 1,600 test items, 6,400 training items) or ``val`` (1,600 items
            drawn from the 6,400 training items are the test set and the other 4,800 train; the
            protocol's test items are not used at all), for choosing settings honestly.
        baseline: also train and measure the linear recipe of EVALUATION-hm.md on the same features.
    """
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    text, image, tv, iv = hm_features(items_path, encoders, cache_dir, progress)
    parts = protocol_split(len(text))
    if split == "val":
        parts = validation_split(parts.train, PROTOCOL_N_TEST)
    baselines = {"linear baseline recipe": LINEAR_BASELINE} if baseline else None
    return run_protocol(text, image, parts, config, text_encoder=tv, image_encoder=iv, baselines=baselines)
