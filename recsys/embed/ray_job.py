"""The embedding job on Ray (``recsys embed --engine ray``): same pages, batches, encoders and writes.

The driver reads the pending items exactly as :func:`recsys.embed.run_embed` does (keyset pages by
item id), ships each page's batches -- ``(text)`` or ``(image source)`` rows, in the local engine's
batch order -- to Ray Data model actors, and writes the vectors that come back with the same store
call, one commit per batch. Each actor builds its encoder once, from a picklable factory, and runs the
local engine's per-batch functions (:func:`~recsys.embed.job.encode_text_batch`,
:func:`~recsys.embed.job.decode_image_batch`, :func:`~recsys.embed.job.encode_image_batch`), so both
engines store the same vectors. Only the driver talks to the database.

Importing this module imports neither Ray nor torch.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from sqlalchemy import Engine

from recsys.embed.job import (
    _pages,
    _progress,
    _start,
    decode_image_batch,
    drive_spaces,
    encode_image_batch,
    encode_text_batch,
    image_rows,
    text_batches,
    text_rows,
)
from recsys.embed.report import EmbedReport, ImageFailure, SpaceReport
from recsys.embed.store import IMAGE, TEXT, write_vectors
from recsys.encoders.access import ImagePolicy
from recsys.encoders.base import Encoder, ImageEncoder
from recsys.encoders.errors import ImageLoadError
from recsys.encoders.settings import EncodersConfig
from recsys.engines.ray_engine import BatchFn, map_batches_ordered, run_remote
from recsys.engines.settings import RayConfig

log = logging.getLogger(__name__)

EncoderFactory = Callable[[], Encoder]
ImageEncoderFactory = Callable[[], ImageEncoder]


def text_encoder_factory(cfg: EncodersConfig) -> EncoderFactory:
    """A picklable factory of the configured text encoder (built where it is called: on a worker)."""
    from recsys.encoders.factory import build_text_encoder

    return functools.partial(build_text_encoder, cfg.text, cfg.device)


def image_encoder_factory(cfg: EncodersConfig) -> ImageEncoderFactory:
    """A picklable factory of the configured image encoder (built where it is called: on a worker)."""
    from recsys.encoders.factory import build_image_encoder

    return functools.partial(build_image_encoder, cfg.image, cfg.device)


# --- run inside the Ray actors -------------------------------------------------------------------


def describe_encoder(factory: EncoderFactory) -> tuple[str, int]:
    """``(version, dim)`` of the encoder the factory builds (the driver needs them before any batch)."""
    encoder = factory()
    return encoder.version, encoder.dim


def make_text_fn(factory: EncoderFactory) -> BatchFn:
    """Model actor set-up for the text space: ``{"text"} -> {"vector", "encode_s"}``."""
    encoder = factory()

    def fn(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t = time.perf_counter()
        vectors = encode_text_batch(encoder, [str(x) for x in batch["text"]])
        spent = time.perf_counter() - t
        return {"vector": vectors, "encode_s": np.full(len(vectors), spent / max(len(vectors), 1))}

    return fn


def make_image_fn(
    factory: ImageEncoderFactory, max_pixels: int, fetch_timeout: float, max_download_bytes: int,
    policy: ImagePolicy | None = None,
) -> BatchFn:
    """Model actor set-up for the image space: ``{"image"} -> {"vector", "ok", "reason", "detail", "encode_s"}``.

    Failed images get a zero vector, ``ok=False`` and their error's reason and detail.
    """
    encoder = factory()

    def fn(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sources = [str(x) for x in batch["image"]]
        n = len(sources)
        decoded = decode_image_batch(sources, encoder.preprocess, max_pixels, fetch_timeout, max_download_bytes, policy)
        t = time.perf_counter()
        good = encode_image_batch(encoder, decoded)
        spent = time.perf_counter() - t
        vectors = np.zeros((n, encoder.dim), dtype=np.float32)
        vectors[decoded.ok] = good
        ok = np.zeros(n, dtype=bool)
        ok[decoded.ok] = True
        reason = np.full(n, "", dtype=object)
        detail = np.full(n, "", dtype=object)
        for pos, err in decoded.failed:
            reason[pos], detail[pos] = err.reason, err.detail
        return {
            "vector": vectors,
            "ok": ok,
            "reason": reason,
            "detail": detail,
            "encode_s": np.full(n, spent / max(n, 1)),
        }

    return fn


# --- the driver ----------------------------------------------------------------------------------


def _describe(factory: EncoderFactory, ray_cfg: RayConfig) -> tuple[str, int]:
    return run_remote(
        describe_encoder, factory, num_cpus=ray_cfg.cpus_per_actor, num_gpus=ray_cfg.gpus_per_actor
    )


def _map(table: dict[str, np.ndarray], make_fn: Callable[[], BatchFn], batch_size: int, ray_cfg: RayConfig) -> Any:
    return map_batches_ordered(
        table,
        make_fn,
        batch_size=batch_size,
        actors=ray_cfg.actors,
        cpus_per_actor=ray_cfg.cpus_per_actor,
        gpus_per_actor=ray_cfg.gpus_per_actor,
    )


def embed_texts_ray(
    engine: Engine,
    factory: EncoderFactory,
    ray_cfg: RayConfig,
    *,
    batch_size: int = 64,
    progress: bool = False,
    page_size: int | None = None,
) -> SpaceReport:
    """:func:`recsys.embed.embed_texts` with the encoding in Ray model actors built by ``factory``."""
    version, dim = _describe(factory, ray_cfg)
    report = _start(engine, TEXT, version)
    make_fn = functools.partial(make_text_fn, factory)
    t0 = time.perf_counter()
    with _progress(report.total - report.skipped, TEXT, progress) as bar:
        for page in _pages(engine, TEXT, version, page_size or ray_cfg.page_size):
            items, texts = [], []
            for batch_items, batch_texts in text_batches(page, batch_size):  # the local engine's batches
                items.extend(batch_items)
                texts.extend(batch_texts)
            done = 0
            for out in _map({"text": np.array(texts, dtype=object)}, make_fn, batch_size, ray_cfg):
                batch = items[done : done + len(out["vector"])]
                done += len(batch)
                write_vectors(engine, TEXT, version, dim, text_rows(batch, out["vector"]))
                report.encode_seconds += float(np.sum(out["encode_s"]))
                report.embedded += len(batch)
                bar.update(len(batch))
    report.seconds = time.perf_counter() - t0
    return report


def embed_images_ray(
    engine: Engine,
    factory: ImageEncoderFactory,
    ray_cfg: RayConfig,
    *,
    batch_size: int = 64,
    max_pixels: int = 40_000_000,
    fetch_timeout: float = 10.0,
    max_download_bytes: int = 20 * 1024 * 1024,
    progress: bool = False,
    page_size: int | None = None,
    on_failure: Callable[[ImageFailure], None] | None = None,
    policy: ImagePolicy | None = None,
) -> SpaceReport:
    """:func:`recsys.embed.embed_images` with decoding and encoding in Ray model actors."""
    version, dim = _describe(factory, ray_cfg)
    report = _start(engine, IMAGE, version)
    make_fn = functools.partial(make_image_fn, factory, max_pixels, fetch_timeout, max_download_bytes, policy)
    t0 = time.perf_counter()
    with _progress(report.total - report.skipped, IMAGE, progress) as bar:
        for page in _pages(engine, IMAGE, version, page_size or ray_cfg.page_size):
            sources = np.array([it.image or "" for it in page], dtype=object)
            done = 0
            for out in _map({"image": sources}, make_fn, batch_size, ray_cfg):
                batch = page[done : done + len(out["ok"])]
                done += len(batch)
                ok = np.flatnonzero(out["ok"]).tolist()
                failed = [
                    (pos, ImageLoadError(str(out["reason"][pos]), batch[pos].image or "", str(out["detail"][pos])))
                    for pos in np.flatnonzero(~out["ok"]).tolist()
                ]
                rows, failures = image_rows(batch, ok, out["vector"][ok], failed)
                if on_failure is not None:
                    for failure in failures:
                        on_failure(failure)
                write_vectors(engine, IMAGE, version, dim, rows)
                report.encode_seconds += float(np.sum(out["encode_s"]))
                report.embedded += len(ok)
                report.failed += len(failed)
                bar.update(len(batch))
    report.seconds = time.perf_counter() - t0
    return report


def run_embed_ray(
    engine: Engine,
    cfg: EncodersConfig,
    ray_cfg: RayConfig,
    *,
    text_factory: EncoderFactory | None,
    image_factory: ImageEncoderFactory | None,
    progress: bool = False,
    page_size: int | None = None,
    policy: ImagePolicy | None = None,
) -> EmbedReport:
    """:func:`recsys.embed.run_embed` on Ray; Ray must be initialised (see :mod:`recsys.engines.ray_engine`).

    Args:
        engine: database at the current schema, reachable from this (driver) process only.
        cfg: batch sizes and image limits, as for the local engine (``image.workers`` is not used:
            the actors decode their own batches).
        ray_cfg: actors and their resources, and the page size.
        text_factory: picklable zero-argument factory of the text encoder (see
            :func:`text_encoder_factory`); ``None`` skips the text space.
        image_factory: the same for the image encoder; ``None`` skips the image space.
        progress: show tqdm progress bars on stderr.
        page_size: pending items per Ray Data job (default ``ray_cfg.page_size``).
        policy: which image paths and URLs may be read, as for the local engine (sent to the actors).

    Returns:
        An :class:`EmbedReport`, as the local engine's. Interrupting keeps the batches written so far.
    """
    steps: list[Callable[[EmbedReport], SpaceReport]] = []
    if text_factory is not None:
        steps.append(lambda report: embed_texts_ray(
            engine, text_factory, ray_cfg, batch_size=cfg.text.batch_size, progress=progress, page_size=page_size))
    if image_factory is not None:
        steps.append(lambda report: embed_images_ray(
            engine,
            image_factory,
            ray_cfg,
            batch_size=cfg.image.batch_size,
            max_pixels=cfg.image.max_pixels,
            fetch_timeout=cfg.image.fetch_timeout_s,
            max_download_bytes=cfg.image.max_download_bytes,
            progress=progress,
            page_size=page_size,
            on_failure=report.failures.append,
            policy=policy,
        ))
    return drive_spaces(steps)
