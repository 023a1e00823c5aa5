"""Content features of an evaluation data set (text + image vectors), cached on disk.

Computed with the project's encoders (:mod:`recsys.encoders.factory`) from the columns named by the
preset: the text is the preset's text columns joined with ``". "`` (``|``-separated lists such as
MovieLens genres become ``", "``-separated); the image is the preset's image column, relative to the
data set's folder. Items without a usable image get a zero image vector. The cache file name holds the
data set name, both encoder versions and a hash of the inputs, so a change of any of them recomputes.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.config import Preset
from recsys.encoders.base import ImageEncoder
from recsys.encoders.settings import EncodersConfig
from recsys.evaluation.data import EvalDataset

log = logging.getLogger(__name__)

__all__ = ["ContentFeatures", "content_features", "item_texts"]


@dataclass(frozen=True)
class ContentFeatures:
    """Per-item content vectors in ``items.csv`` row order.

    Attributes:
        text: ``(n_items, d_text)`` float32, L2-normalised.
        image: ``(n_items, d_image)`` float32, L2-normalised rows, zero rows where ``has_image`` is False.
        has_image: ``(n_items,)`` bool.
        text_version, image_version: the encoders' version strings.
    """

    text: np.ndarray
    image: np.ndarray
    has_image: np.ndarray
    text_version: str
    image_version: str

    def combined(self) -> np.ndarray:
        """``(n_items, d_text + d_image)`` float32: both parts side by side, each row L2-normalised.

        An item with an image weighs text and image equally (cosine = mean of the two cosines); one
        without an image is its text vector.
        """
        out = np.concatenate([self.text, self.image], axis=1).astype(np.float32)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


def item_texts(ds: EvalDataset, preset: Preset) -> list[str]:
    """One text per item from the preset's text columns (title when none are named)."""
    columns = list(preset.items.text) or ([preset.items.title] if preset.items.title else [])
    missing = [c for c in columns if c not in ds.items.columns]
    if missing:
        from recsys.errors import InputFormatError

        raise InputFormatError(f"{ds.name}/items.csv has no column(s) {missing} named by the preset")
    parts = [ds.items[c].str.replace("|", ", ", regex=False) for c in columns]
    texts = []
    for row in zip(*parts):
        texts.append(". ".join(s.strip() for s in row if s.strip()))
    return texts


def _image_paths(ds: EvalDataset, preset: Preset) -> list[str | None]:
    col = preset.items.image
    if col is None or col not in ds.items.columns:
        return [None] * ds.n_items
    return [str(ds.root / p) if p.strip() else None for p in ds.items[col]]


def _digest(texts: list[str], paths: list[str | None]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8") + b"\x00")
    for p in paths:
        h.update((Path(p).name if p else "-").encode("utf-8") + b"\x00")
    return h.hexdigest()[:16]


def _safe(version: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.@" else "_" for ch in version)


def _encode_images(
    encoder: ImageEncoder, paths: list[str | None], max_pixels: int, batch: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(n, dim)`` image vectors (zero rows where an image is missing or unreadable) and the ok mask."""
    from recsys.encoders.errors import ImageLoadError
    from recsys.encoders.images import load_image

    out = np.zeros((len(paths), encoder.dim), dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    todo = [i for i, p in enumerate(paths) if p is not None]
    for start in range(0, len(todo), batch):
        rows, tensors = [], []
        for i in todo[start : start + batch]:
            try:
                image = load_image(paths[i], max_pixels)  # type: ignore[arg-type]
            except ImageLoadError as exc:
                log.warning("item row %d: no image vector (%s)", i, exc)
                continue
            tensors.append(encoder.preprocess(image))
            rows.append(i)
        if rows:
            out[rows] = encoder.encode_tensors(np.stack(tensors))
            ok[rows] = True
        log.info("images %d/%d", min(start + batch, len(todo)), len(todo))
    return out, ok


def content_features(
    ds: EvalDataset, preset: Preset, cfg: EncodersConfig, cache_dir: str | Path | None = None
) -> ContentFeatures:
    """Text and image vectors of every item, from the cache when present.

    Args:
        cache_dir: folder for ``<name>-<text version>-<image version>-<input hash>.npz``; ``None``
            computes without caching.
    """
    from recsys.encoders.factory import build_image_encoder, build_text_encoder

    if cfg.threads > 0:
        import torch

        torch.set_num_threads(cfg.threads)
    texts = item_texts(ds, preset)
    paths = _image_paths(ds, preset)
    text_enc = build_text_encoder(cfg.text, cfg.device)
    image_enc = build_image_encoder(cfg.image, cfg.device)
    key = f"{ds.name}-{_safe(text_enc.version)}-{_safe(image_enc.version)}-{_digest(texts, paths)}.npz"
    cache = Path(cache_dir) / key if cache_dir is not None else None
    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            log.info("content features from cache %s", cache)
            return ContentFeatures(z["text"], z["image"], z["has_image"], text_enc.version, image_enc.version)
    t0 = time.perf_counter()
    text = np.asarray(text_enc.encode(texts), dtype=np.float32)
    t1 = time.perf_counter()
    image, has_image = _encode_images(image_enc, paths, cfg.image.max_pixels, cfg.image.batch_size)
    log.info("content features of %s: text %.1fs, images %.1fs", ds.name, t1 - t0, time.perf_counter() - t1)
    feats = ContentFeatures(text, image, has_image, text_enc.version, image_enc.version)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, text=text, image=image, has_image=has_image)
        tmp.replace(cache)
    return feats
