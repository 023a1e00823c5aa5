"""The batch embedding job: every item's text and image vectors, incremental and resumable.

- Incremental: an item is encoded in a space only when its row for (item, space, encoder version) is
  missing or carries another content hash; re-running after no change does no encoder work.
- Resumable: each batch is committed on its own, so an interrupted run loses at most the batch in
  flight, and the next run picks up the items still pending.
- Robust to bad images: an image that is missing, not an image, truncated, too large or cannot be
  downloaded gives a row with ``vector = NULL`` and the reason in ``error`` (not retried until the item
  changes); the item keeps its text vector and the run goes on. The report lists the failures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
from sqlalchemy import Engine

from recsys.embed.loading import DecodedBatch, ImageSourceDataset, collate_decoded, iter_decoded
from recsys.embed.report import EmbedReport, ImageFailure, SpaceReport
from recsys.embed.store import IMAGE, TEXT, PendingItem, VectorRow, count_items, item_text, pending_items, write_vectors
from recsys.encoders.access import ImagePolicy
from recsys.encoders.base import Encoder, ImageEncoder
from recsys.encoders.errors import ImageLoadError
from recsys.encoders.settings import EncodersConfig

log = logging.getLogger(__name__)

T = TypeVar("T")
PAGE_SIZE = 8192


def _chunks(seq: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def _pages(engine: Engine, space: str, encoder: str, page_size: int) -> Iterator[list[PendingItem]]:
    """Pending items in pages by increasing id; each page is read after the previous one was written."""
    after = 0
    while True:
        with engine.connect() as conn:
            page = pending_items(conn, space, encoder, after_id=after, limit=page_size)
        if not page:
            return
        yield page
        after = page[-1].id


def text_batches(page: Sequence[PendingItem], batch_size: int) -> Iterator[tuple[list[PendingItem], list[str]]]:
    """The page's items and texts in batches of similar length (less padding, faster encoding).

    Safe for resuming: what is pending is decided per item, not by position.
    """
    texts = [item_text(it.title, it.description) for it in page]
    order = sorted(range(len(page)), key=lambda i: len(texts[i]))
    for chunk in _chunks(order, batch_size):
        yield [page[i] for i in chunk], [texts[i] for i in chunk]


def _progress(total: int, space: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"embed {space}", unit="item", disable=not enabled, dynamic_ncols=True, leave=True)


def _start(engine: Engine, space: str, version: str) -> SpaceReport:
    with engine.connect() as conn:
        total, pending = count_items(conn, space, version)
    report = SpaceReport(space=space, encoder=version, total=total, skipped=total - pending)
    log.info("%s space, encoder %s: %d of %d items to embed", space, version, pending, total)
    return report


# Per-batch steps shared by the local loops below and the Ray engine (recsys.embed.ray_job): both
# engines encode the same batches with the same functions and write them with the same store call.


def encode_text_batch(encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
    """The text space's per-batch work: ``(len(texts), dim)`` float32 vectors."""
    return encoder.encode(list(texts))


def text_rows(items: Sequence[PendingItem], vectors: np.ndarray) -> list[VectorRow]:
    """What is stored for a text batch: one vector per item, in order."""
    return [VectorRow(it.id, it.content_hash, v) for it, v in zip(items, vectors, strict=True)]


def decode_image_batch(
    sources: Sequence[str],
    preprocess: Callable[[Any], np.ndarray],
    max_pixels: int,
    fetch_timeout: float,
    max_download_bytes: int,
    policy: ImagePolicy | None = None,
) -> DecodedBatch:
    """Decode a batch of image sources in this process (the local engine does it in worker processes)."""
    dataset = ImageSourceDataset(list(sources), preprocess, max_pixels, fetch_timeout, max_download_bytes, policy)
    return collate_decoded([dataset[i] for i in range(len(dataset))])


def encode_image_batch(encoder: ImageEncoder, batch: DecodedBatch) -> np.ndarray:
    """The image space's per-batch work: vectors of the decoded images ``batch.ok``, ``(len(ok), dim)``."""
    if batch.tensor is None:
        return np.empty((0, encoder.dim), dtype=np.float32)
    return encoder.encode_tensors(batch.tensor)


def image_rows(
    items: Sequence[PendingItem],
    ok: Sequence[int],
    vectors: np.ndarray,
    failed: Sequence[tuple[int, ImageLoadError]],
) -> tuple[list[VectorRow], list[ImageFailure]]:
    """What is stored for an image batch: vectors of ``items[ok]``, errors of the failed positions."""
    rows = [VectorRow(items[pos].id, items[pos].content_hash, vec) for pos, vec in zip(ok, vectors, strict=True)]
    failures = []
    for pos, err in failed:
        item = items[pos]
        rows.append(VectorRow(item.id, item.content_hash, None, str(err)))
        failures.append(ImageFailure(item.id, err.source, err.reason, err.detail))
        log.debug("item %d: %s", item.id, err)
    return rows, failures


def embed_texts(
    engine: Engine,
    encoder: Encoder,
    *,
    batch_size: int = 64,
    progress: bool = False,
    page_size: int = PAGE_SIZE,
) -> SpaceReport:
    """Encode the pending items' ``title`` + ``description`` and store the vectors (one commit per batch)."""
    report = _start(engine, TEXT, encoder.version)
    t0 = time.perf_counter()
    with _progress(report.total - report.skipped, TEXT, progress) as bar:
        for page in _pages(engine, TEXT, encoder.version, page_size):
            for batch, texts in text_batches(page, batch_size):
                t = time.perf_counter()
                vectors = encode_text_batch(encoder, texts)
                report.encode_seconds += time.perf_counter() - t
                rows = text_rows(batch, vectors)
                write_vectors(engine, TEXT, encoder.version, encoder.dim, rows)
                report.embedded += len(rows)
                bar.update(len(rows))
    report.seconds = time.perf_counter() - t0
    return report


def embed_images(
    engine: Engine,
    encoder: ImageEncoder,
    *,
    batch_size: int = 64,
    workers: int = 2,
    max_pixels: int = 40_000_000,
    fetch_timeout: float = 10.0,
    max_download_bytes: int = 20 * 1024 * 1024,
    progress: bool = False,
    page_size: int = PAGE_SIZE,
    on_failure: Callable[[ImageFailure], None] | None = None,
    policy: ImagePolicy | None = None,
) -> SpaceReport:
    """Decode (in ``workers`` processes), encode and store the pending items' images.

    Failed images (also those ``policy`` refuses) are stored as errors and passed to ``on_failure``.
    """
    report = _start(engine, IMAGE, encoder.version)
    t0 = time.perf_counter()
    with _progress(report.total - report.skipped, IMAGE, progress) as bar:
        for page in _pages(engine, IMAGE, encoder.version, page_size):
            dataset = ImageSourceDataset(
                [it.image or "" for it in page], encoder.preprocess, max_pixels, fetch_timeout, max_download_bytes,
                policy,
            )
            for batch in iter_decoded(dataset, batch_size=batch_size, workers=workers):
                t = time.perf_counter()
                vectors = encode_image_batch(encoder, batch)
                report.encode_seconds += time.perf_counter() - t
                rows, failures = image_rows(page, batch.ok, vectors, batch.failed)
                if on_failure is not None:
                    for failure in failures:
                        on_failure(failure)
                write_vectors(engine, IMAGE, encoder.version, encoder.dim, rows)
                report.embedded += len(batch.ok)
                report.failed += len(batch.failed)
                bar.update(len(batch))
    report.seconds = time.perf_counter() - t0
    return report


def run_embed(
    engine: Engine,
    cfg: EncodersConfig,
    *,
    text_encoder: Encoder | None,
    image_encoder: ImageEncoder | None,
    progress: bool = False,
    page_size: int = PAGE_SIZE,
    policy: ImagePolicy | None = None,
) -> EmbedReport:
    """Embed every pending item: texts with ``text_encoder``, then images with ``image_encoder``.

    Args:
        engine: database at the current schema (``items`` and ``item_embeddings``).
        cfg: batch sizes, image workers, pixel and download limits.
        text_encoder: ``None`` skips the text space.
        image_encoder: ``None`` skips the image space.
        progress: show tqdm progress bars (items/s) on stderr.
        page_size: pending items read from the database at a time.
        policy: which image paths and URLs may be read (:func:`recsys.encoders.access.image_policy`;
            ``recsys embed`` and the service always give one). ``None``: any stored path, public URLs only.

    Returns:
        An :class:`EmbedReport` with counts per space, throughput and the image failures of this run.
        An exception (or Ctrl-C) stops the run after the last committed batch; run again to continue.
    """
    steps: list[Callable[[EmbedReport], SpaceReport]] = []
    if text_encoder is not None:
        steps.append(lambda report: embed_texts(
            engine, text_encoder, batch_size=cfg.text.batch_size, progress=progress, page_size=page_size))
    if image_encoder is not None:
        steps.append(lambda report: embed_images(
            engine,
            image_encoder,
            batch_size=cfg.image.batch_size,
            workers=cfg.image.workers,
            max_pixels=cfg.image.max_pixels,
            fetch_timeout=cfg.image.fetch_timeout_s,
            max_download_bytes=cfg.image.max_download_bytes,
            progress=progress,
            page_size=page_size,
            on_failure=report.failures.append,
            policy=policy,
        ))
    return drive_spaces(steps)


def drive_spaces(steps: list[Callable[[EmbedReport], SpaceReport]]) -> EmbedReport:
    """Run the spaces' embedding steps in order (each gets the report, for its failures) and time and log
    the whole: the driver loop of every engine (local here, Ray in :mod:`recsys.embed.ray_job`)."""
    report = EmbedReport()
    t0 = time.perf_counter()
    try:
        for step in steps:
            report.spaces.append(step(report))
    except KeyboardInterrupt:
        log.warning("interrupted: the batches written so far are kept; run again to embed the rest")
        raise
    report.seconds = time.perf_counter() - t0
    for line in report.lines(max_failures=0):
        log.info("%s", line)
    return report
