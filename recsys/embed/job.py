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

from sqlalchemy import Engine

from recsys.embed.loading import ImageSourceDataset, iter_decoded
from recsys.embed.report import EmbedReport, ImageFailure, SpaceReport
from recsys.embed.store import IMAGE, TEXT, PendingItem, VectorRow, count_items, item_text, pending_items, write_vectors
from recsys.encoders.base import Encoder, ImageEncoder
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


def _start(engine: Engine, space: str, encoder: Encoder) -> SpaceReport:
    with engine.connect() as conn:
        total, pending = count_items(conn, space, encoder.version)
    report = SpaceReport(space=space, encoder=encoder.version, total=total, skipped=total - pending)
    log.info("%s space, encoder %s: %d of %d items to embed", space, encoder.version, pending, total)
    return report


def embed_texts(
    engine: Engine,
    encoder: Encoder,
    *,
    batch_size: int = 64,
    progress: bool = False,
    page_size: int = PAGE_SIZE,
) -> SpaceReport:
    """Encode the pending items' ``title`` + ``description`` and store the vectors (one commit per batch)."""
    report = _start(engine, TEXT, encoder)
    t0 = time.perf_counter()
    with _progress(report.total - report.skipped, TEXT, progress) as bar:
        for page in _pages(engine, TEXT, encoder.version, page_size):
            for batch, texts in text_batches(page, batch_size):
                t = time.perf_counter()
                vectors = encoder.encode(texts)
                report.encode_seconds += time.perf_counter() - t
                rows = [VectorRow(it.id, it.content_hash, v) for it, v in zip(batch, vectors, strict=True)]
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
) -> SpaceReport:
    """Decode (in ``workers`` processes), encode and store the pending items' images.

    Failed images are stored as errors and passed to ``on_failure``.
    """
    report = _start(engine, IMAGE, encoder)
    t0 = time.perf_counter()
    with _progress(report.total - report.skipped, IMAGE, progress) as bar:
        for page in _pages(engine, IMAGE, encoder.version, page_size):
            dataset = ImageSourceDataset(
                [it.image or "" for it in page], encoder.preprocess, max_pixels, fetch_timeout, max_download_bytes
            )
            for batch in iter_decoded(dataset, batch_size=batch_size, workers=workers):
                rows: list[VectorRow] = []
                if batch.tensor is not None:
                    t = time.perf_counter()
                    vectors = encoder.encode_tensors(batch.tensor)
                    report.encode_seconds += time.perf_counter() - t
                    for pos, vec in zip(batch.ok, vectors, strict=True):
                        rows.append(VectorRow(page[pos].id, page[pos].content_hash, vec))
                for pos, err in batch.failed:
                    item = page[pos]
                    rows.append(VectorRow(item.id, item.content_hash, None, str(err)))
                    failure = ImageFailure(item.id, err.source, err.reason, err.detail)
                    log.debug("item %d: %s", item.id, err)
                    if on_failure is not None:
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
) -> EmbedReport:
    """Embed every pending item: texts with ``text_encoder``, then images with ``image_encoder``.

    Args:
        engine: database at the current schema (``items`` and ``item_embeddings``).
        cfg: batch sizes, image workers, pixel and download limits.
        text_encoder: ``None`` skips the text space.
        image_encoder: ``None`` skips the image space.
        progress: show tqdm progress bars (items/s) on stderr.
        page_size: pending items read from the database at a time.

    Returns:
        An :class:`EmbedReport` with counts per space, throughput and the image failures of this run.
        An exception (or Ctrl-C) stops the run after the last committed batch; run again to continue.
    """
    report = EmbedReport()
    t0 = time.perf_counter()
    try:
        if text_encoder is not None:
            text = embed_texts(
                engine, text_encoder, batch_size=cfg.text.batch_size, progress=progress, page_size=page_size
            )
            report.spaces.append(text)
        if image_encoder is not None:
            report.spaces.append(
                embed_images(
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
                )
            )
    except KeyboardInterrupt:
        log.warning("interrupted: the batches written so far are kept; run again to embed the rest")
        raise
    report.seconds = time.perf_counter() - t0
    for line in report.lines(max_failures=0):
        log.info("%s", line)
    return report
