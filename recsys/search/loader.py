"""Wire a :class:`~recsys.search.engine.ProductSearch` from the database, the active alignment and the encoders.

- With an active alignment (``recsys train-align``): the catalogue holds each item's fused embedding
  (aligned text and image vectors, weights ``align.fusion_*``; items without an image use their text),
  and text and image queries are encoded then projected into the joint space.
- Without one: the catalogue holds the raw text vectors and only text queries are possible.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, select

from recsys.align.fusion import fuse_embeddings
from recsys.align.model import AlignmentModel
from recsys.align.settings import AlignConfig
from recsys.config import Config
from recsys.encoders.base import Encoder
from recsys.errors import ArtifactError
from recsys.search.engine import Catalogue, ProductSearch
from recsys.store.models import Item

log = logging.getLogger(__name__)


def _item_rows(engine: Engine, ids: np.ndarray) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str | None, ...], np.ndarray]:
    """External ids, titles, categories and availability of internal ``ids`` (in that order)."""
    meta: dict[int, tuple[str, str, str | None, bool]] = {}
    wanted = [int(i) for i in ids]
    with engine.connect() as conn:
        for start in range(0, len(wanted), 5000):
            chunk = wanted[start : start + 5000]
            stmt = select(Item.id, Item.external_id, Item.title, Item.category, Item.available).where(Item.id.in_(chunk))
            for row in conn.execute(stmt):
                meta[int(row[0])] = (row[1], row[2] or "", row[3], bool(row[4]))
    rows = [meta[i] for i in wanted]
    return (
        tuple(r[0] for r in rows),
        tuple(r[1] for r in rows),
        tuple(r[2] for r in rows),
        np.array([r[3] for r in rows], dtype=bool),
    )


def aligned_catalogue(engine: Engine, alignment: AlignmentModel, align: AlignConfig,
                      item_ids: np.ndarray | None = None) -> Catalogue:
    """Every item with a current text or image vector of the alignment's encoders, as fused joint vectors
    (only the internal ``item_ids``, when given: possibly none)."""
    from recsys.embed import IMAGE, TEXT, load_item_vectors

    t_ids, text = load_item_vectors(engine, TEXT, alignment.text_encoder, item_ids=item_ids)
    i_ids, image = load_item_vectors(engine, IMAGE, alignment.image_encoder, item_ids=item_ids)
    ids = np.union1d(t_ids, i_ids)
    if len(ids) == 0 and item_ids is not None:
        return Catalogue.empty(alignment.dim, space=f"align:{alignment.version}")
    if len(ids) == 0:
        raise ArtifactError(
            f"no stored vectors of the alignment's encoders ({alignment.text_encoder}, {alignment.image_encoder}); "
            "run `recsys embed`"
        )
    joint_t = np.zeros((len(ids), alignment.dim), np.float32)
    joint_i = np.zeros((len(ids), alignment.dim), np.float32)
    has_t, has_i = np.isin(ids, t_ids), np.isin(ids, i_ids)
    if len(t_ids):
        joint_t[has_t] = alignment.project_text(text)
    if len(i_ids):
        joint_i[has_i] = alignment.project_image(image)
    vectors = fuse_embeddings(joint_t, joint_i, has_i, align.fusion_text_weight, align.fusion_image_weight, has_text=has_t)
    ext, titles, cats, avail = _item_rows(engine, ids)
    log.info("search catalogue: %d items (%d without an image vector)", len(ids), int((~has_i).sum()))
    return Catalogue(ext, titles, cats, avail, vectors, space=f"align:{alignment.version}")


def text_catalogue(engine: Engine, text_version: str, item_ids: np.ndarray | None = None) -> Catalogue:
    """Every item with a current text vector of ``text_version``, raw (no alignment); only the internal
    ``item_ids``, when given (possibly none)."""
    from recsys.embed import TEXT, load_item_vectors

    ids, text = load_item_vectors(engine, TEXT, text_version, item_ids=item_ids)
    if len(ids) == 0 and item_ids is not None:
        return Catalogue.empty(0, space=text_version)
    if len(ids) == 0:
        raise ArtifactError(f"no stored text vectors of {text_version}; run `recsys embed`")
    ext, titles, cats, avail = _item_rows(engine, ids)
    return Catalogue(ext, titles, cats, avail, text, space=text_version)


def _image_loader(max_pixels: int) -> Callable[[Any], Any]:
    def load(image: Any) -> Any:
        if isinstance(image, (str, Path)):
            from recsys.encoders.images import load_image

            return load_image(image, max_pixels)
        return image

    return load


def build_product_search(
    engine: Engine,
    config: Config,
    align: AlignConfig | None = None,
    *,
    alignment: AlignmentModel | None = None,
    text_encoder: Encoder | None = None,
    image_encoder: Encoder | Callable[[], Encoder] | None = None,
    lexical: bool = True,
) -> ProductSearch:
    """A ready search over the catalogue in the database.

    Args:
        align: fusion weights (default ``config.align`` when wired in, else ``AlignConfig()``).
        alignment: default: the active registered alignment (none: raw text search).
        text_encoder: default: built from ``config.encoders.text``.
        image_encoder: an encoder, or a function building one on the first image query (default:
            built from ``config.encoders.image`` when first needed).
        lexical: also load (find or build) the lexical index, attributes and prices (``search.text_index``).

    Raises:
        ArtifactError: the encoders do not match the alignment, or nothing is embedded yet.
    """
    from recsys.align.store import load_alignment

    align = align or getattr(config, "align", None) or AlignConfig()
    if alignment is None:
        alignment = load_alignment(engine, config)
    if text_encoder is None:
        from recsys.encoders.factory import build_text_encoder

        text_encoder = build_text_encoder(config.encoders.text, config.encoders.device)
    if alignment is None:
        log.info("no active alignment: text search over the raw text vectors of %s", text_encoder.version)
        search = ProductSearch(text_catalogue(engine, text_encoder.version), text_encoder.encode, None)
        search.rows_loader = lambda ids: text_catalogue(engine, text_encoder.version, ids)
        return _with_text(search, engine, config, lexical)
    if text_encoder.version != alignment.text_encoder:
        raise ArtifactError(
            f"the active alignment {alignment.version} was trained on text vectors of {alignment.text_encoder}, "
            f"but the configured text encoder is {text_encoder.version}; run `recsys embed` and `recsys train-align`"
        )
    catalogue = aligned_catalogue(engine, alignment, align)
    load = _image_loader(config.encoders.image.max_pixels)
    state: dict[str, Encoder] = {}

    def image_enc() -> Encoder:
        if "enc" not in state:
            if image_encoder is None:
                from recsys.encoders.factory import build_image_encoder

                enc = build_image_encoder(config.encoders.image, config.encoders.device)
            elif callable(image_encoder) and not hasattr(image_encoder, "encode"):
                enc = image_encoder()
            else:
                enc = image_encoder  # type: ignore[assignment]
            if enc.version != alignment.image_encoder:
                raise ArtifactError(
                    f"the active alignment {alignment.version} was trained on image vectors of "
                    f"{alignment.image_encoder}, but the configured image encoder is {enc.version}"
                )
            state["enc"] = enc
        return state["enc"]

    def encode_text(batch: Sequence[str]) -> np.ndarray:
        return alignment.project_text(text_encoder.encode(list(batch)))

    def encode_image(batch: Sequence[Any]) -> np.ndarray:
        return alignment.project_image(image_enc().encode([load(b) for b in batch]))

    search = ProductSearch(catalogue, encode_text, encode_image, align.fusion_text_weight, align.fusion_image_weight)
    search.rows_loader = lambda ids: aligned_catalogue(engine, alignment, align, ids)
    return _with_text(search, engine, config, lexical)


def _with_text(search: ProductSearch, engine: Engine, config: Config, lexical: bool) -> ProductSearch:
    """``search`` with its :class:`~recsys.search.hybrid.SearchText` (the published lexical index)."""
    if lexical:
        from recsys.search.text_loader import build_search_text

        search.text_index = build_search_text(engine, config, search.catalogue.ids)
    return search
