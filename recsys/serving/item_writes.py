"""Item upserts through the API (``PUT /v1/items``): embedding off the request, a bounded wait.

A PUT stores its items, checks their image references (:mod:`recsys.encoders.access`: a refused one is
an :class:`~recsys.errors.ImageAccessError` naming ``items[i].image`` before anything is stored), and
hands the new or changed items to a background job; the answer waits for the job and this process's
reload for at most ``service.upsert_wait_s`` in all and says ``"servable": true|false``. A job embeds
exactly the items of its own PUT: texts first, images downloaded in parallel (each under the fetch
deadline and size cap), and an image that fails is stored as that item's error (the item keeps its
text vector, as ``recsys embed`` records them), so it is never fetched again inside another request.
Jobs run in a pool of ``service.embed_threads`` threads, so one slow image holds up no other PUT.
Items left pending by a process killed mid-job are embedded by the next ``recsys embed``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import Engine

from recsys.config import Config
from recsys.embed.job import image_rows, text_batches, text_rows
from recsys.embed.store import IMAGE, TEXT, PendingItem, VectorRow, current_hashes, pending_items_of, write_vectors
from recsys.encoders.access import ImagePolicy, check_reference
from recsys.store.image_roots import API_IMAGES, image_policy, image_roots
from recsys.encoders.errors import ImageLoadError
from recsys.errors import ImageAccessError

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    """What a background job did: vectors stored, images that failed (``(external id, reason)``), and
    the reload ticket (``Runtime.request_reload``) whose end makes the items servable."""

    embedded: int = 0
    image_errors: list[dict[str, str]] = field(default_factory=list)
    ticket: int | None = None


class ItemWrites:
    """The upsert path of one serving process.

    Args:
        config: the service configuration (``service.upsert_wait_s``, ``service.embed_threads``, the
            ``images`` policy and ``encoders.image`` limits).
        engine: the database.
        text_encoder, image_encoder: zero-argument functions returning the encoders (built on first use).
        request_reload, wait_reload: the runtime's background reload and its wait (ticket, timeout).
        catalogue_stamp: called with the number of changed items after the vectors are stored, so every
            serving process notices the change.
    """

    def __init__(self, config: Config, engine: Engine, *, text_encoder: Callable[[], Any],
                 image_encoder: Callable[[], Any], request_reload: Callable[[], int],
                 wait_reload: Callable[[int, float | None], bool], catalogue_stamp: Callable[[int], None]) -> None:
        self.config = config
        self.engine = engine
        self._text_encoder = text_encoder
        self._image_encoder = image_encoder
        self._request_reload = request_reload
        self._wait_reload = wait_reload
        self._stamp = catalogue_stamp
        threads = max(config.service.embed_threads, 1)
        self._jobs = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="recsys-embed")
        self._fetches = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="recsys-image")
        self._encode = threading.Lock()  # one forward pass at a time; downloads run in parallel
        self._build = threading.Lock()  # the encoders are built once, by the first job that needs them
        self._policy: ImagePolicy | None = None
        self._policy_at = 0.0

    # ----------------------------------------------------------------------------------- the request
    def upsert(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Store ``items`` (dicts of :class:`~recsys.store.models.Item` fields plus ``id``) and embed the new
        or changed ones in the background, waiting at most ``service.upsert_wait_s``.

        Raises:
            ImageAccessError: an item's ``image`` is refused (``field`` names it); nothing was stored.
        """
        from recsys.ingest.items import upsert_item_records

        t0 = time.monotonic()
        checked = self.check_images(items)
        report, changed = upsert_item_records(self.engine, checked)
        answer: dict[str, Any] = {"inserted": report.inserted, "updated": report.updated,
                                  "unchanged": report.unchanged, "embedded": 0, "servable": True}
        if not changed:
            return answer
        with_image = bool({str(it["id"]) for it in checked if it.get("image")} & set(changed))
        future = self._jobs.submit(self._job, changed, with_image)
        wait = self.config.service.upsert_wait_s
        try:
            result = future.result(timeout=max(wait - (time.monotonic() - t0), 0.0))
        except FutureTimeout:
            answer["servable"] = False
            return answer
        except Exception:  # noqa: BLE001 - logged by the job; the items are stored, `recsys embed` embeds them
            answer["servable"] = False
            return answer
        answer["embedded"] = result.embedded
        if result.image_errors:
            answer["image_errors"] = result.image_errors
        answer["servable"] = result.ticket is not None and self._wait_reload(
            result.ticket, max(wait - (time.monotonic() - t0), 0.0))
        return answer

    def policy(self) -> ImagePolicy:
        """The API's image policy: ``<data_dir>/images`` and ``images.roots`` when checking a PUT; reading
        (the job) also allows the folders recorded by ``recsys ingest`` (re-read at most every 30 s)."""
        now = time.monotonic()
        if self._policy is None or now - self._policy_at > 30.0:
            self._policy = image_policy(self.config, image_roots(self.config, self.engine))
            self._policy_at = now
        return self._policy

    def check_images(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``items`` with each ``image`` in its stored form (URL as given, path resolved and absolute).

        A relative path is taken from ``<data_dir>/images``. Raises :class:`ImageAccessError` with
        ``field = "items[i].image"`` for the first refused one."""
        policy = image_policy(self.config, image_roots(self.config))
        base = self.config.data_dir / API_IMAGES
        out = []
        for i, it in enumerate(items):
            image = it.get("image")
            if image:
                try:
                    it = {**it, "image": check_reference(str(image), policy, base=base)}
                except ImageAccessError as exc:
                    exc.field = f"items[{i}].image"
                    raise
            out.append(it)
        return out

    # ----------------------------------------------------------------------------------- the job
    def _job(self, external_ids: Sequence[str], with_image: bool) -> JobResult:
        """:meth:`_embed`, logging a failure (the request may have stopped waiting for it)."""
        try:
            return self._embed(external_ids, with_image)
        except Exception:
            log.exception("embedding %d upserted items failed; they are stored and wait for `recsys embed`",
                          len(external_ids))
            raise

    def _embed(self, external_ids: Sequence[str], with_image: bool) -> JobResult:
        """Embed the texts and images of these items, store them, stamp the catalogue, request a reload."""
        result = JobResult()
        with self._build:
            text_enc = self._text_encoder()
            image_enc = self._image_encoder() if with_image else None
        with self.engine.connect() as conn:
            texts = pending_items_of(conn, TEXT, text_enc.version, external_ids)
            images = pending_items_of(conn, IMAGE, image_enc.version, external_ids) if image_enc is not None else []
        loads = [self._fetches.submit(self._load, it.image or "", image_enc.preprocess) for it in images]
        for batch, batch_texts in text_batches(texts, self.config.encoders.text.batch_size):
            with self._encode:
                vectors = text_enc.encode(list(batch_texts))
            result.embedded += self._write(TEXT, text_enc, text_rows(batch, vectors))
        if image_enc is not None:
            result.embedded += self._images(image_enc, images, [f.result() for f in loads], result)
        self._stamp(len(external_ids))
        result.ticket = self._request_reload()
        return result

    def _load(self, source: str, preprocess: Callable[[Any], np.ndarray]) -> np.ndarray | ImageLoadError:
        """One image, downloaded or read under the policy and preprocessed; the error when it fails."""
        from recsys.encoders.images import load_image

        try:
            return preprocess(load_image(source, self.config.encoders.image.max_pixels, policy=self.policy()))
        except ImageLoadError as exc:
            return exc

    def _images(self, encoder: Any, items: list[PendingItem], loaded: list[np.ndarray | ImageLoadError],
                result: JobResult) -> int:
        ok = [i for i, x in enumerate(loaded) if not isinstance(x, ImageLoadError)]
        failed = [(i, x) for i, x in enumerate(loaded) if isinstance(x, ImageLoadError)]
        vectors = np.empty((0, encoder.dim), dtype=np.float32)
        if ok:
            import torch

            with self._encode:
                vectors = encoder.encode_tensors(torch.from_numpy(np.stack([loaded[i] for i in ok])))
        rows, failures = image_rows(items, ok, vectors, failed)
        by_id = self._external_ids([f.item_id for f in failures])
        for f in failures:
            log.warning("item %s: image %s not used (%s: %s)", by_id.get(f.item_id, f.item_id), f.source, f.reason, f.detail)
            result.image_errors.append({"id": by_id.get(f.item_id, str(f.item_id)), "reason": f.reason, "detail": f.detail})
        self._write(IMAGE, encoder, rows)
        return len(ok)

    def _external_ids(self, item_ids: Sequence[int]) -> dict[int, str]:
        if not item_ids:
            return {}
        from sqlalchemy import select

        from recsys.store.models import Item

        with self.engine.connect() as conn:
            return {int(i): str(e) for i, e in conn.execute(select(Item.id, Item.external_id).where(Item.id.in_(list(item_ids))))}

    def _write(self, space: str, encoder: Any, rows: list[VectorRow]) -> int:
        """Store ``rows`` except those of items changed since they were read (a newer PUT embeds those)."""
        with self.engine.connect() as conn:
            now = current_hashes(conn, [r.item_id for r in rows])
        rows = [r for r in rows if now.get(r.item_id) == r.content_hash]
        write_vectors(self.engine, space, encoder.version, encoder.dim, rows)
        return sum(r.vector is not None for r in rows)

    def close(self) -> None:
        self._jobs.shutdown(wait=False, cancel_futures=True)
        self._fetches.shutdown(wait=False, cancel_futures=True)


def catalogue_stamper(engine: Engine, kind: str) -> Callable[[int], None]:
    """A function registering a new catalogue stamp (registry ``kind``, version ``api``)."""
    from recsys.store.artifacts import register_artifact

    def stamp(changed: int) -> None:
        register_artifact(engine, kind, "api", None, metrics={"stamp": uuid.uuid4().hex, "changed_items": changed})

    return stamp
