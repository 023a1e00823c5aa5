"""SQL side of the embedding job: which items need work, writing vectors, reading them back.

Vectors are stored one row per (item, space, encoder version) in ``item_embeddings`` as little-endian
float32 bytes, with the item's ``content_hash`` at the time it was embedded. A row whose hash differs
from the item's current hash is stale: the job re-embeds it and readers ignore it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine, and_, delete, func, insert, or_, select
from sqlalchemy.engine import Connection

from recsys.store.models import Item, ItemEmbedding

TEXT = "text"
IMAGE = "image"
SPACES = (TEXT, IMAGE)


@dataclass(frozen=True)
class PendingItem:
    """An item that needs (re-)embedding in one space."""

    id: int
    content_hash: str
    title: str
    description: str
    image: str | None


@dataclass(frozen=True)
class VectorRow:
    """What the job writes for one item: a vector, or ``vector=None`` and the error."""

    item_id: int
    content_hash: str
    vector: np.ndarray | None
    error: str | None = None


def item_text(title: str | None, description: str | None) -> str:
    """The text the text encoder reads for an item: title and description, one per line."""
    return "\n".join(p for p in ((title or "").strip(), (description or "").strip()) if p)


def _check_space(space: str) -> None:
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")


def _eligible(space: str):  # type: ignore[no-untyped-def]
    return Item.image.is_not(None) if space == IMAGE else Item.id.is_not(None)


def _pending_filter(space: str, encoder: str):  # type: ignore[no-untyped-def]
    join_on = and_(ItemEmbedding.item_id == Item.id, ItemEmbedding.space == space, ItemEmbedding.encoder == encoder)
    missing_or_stale = or_(ItemEmbedding.id.is_(None), ItemEmbedding.content_hash != Item.content_hash)
    return join_on, and_(_eligible(space), missing_or_stale)


def count_items(conn: Connection, space: str, encoder: str) -> tuple[int, int]:
    """``(eligible, pending)`` item counts for ``space`` and ``encoder`` (a version string)."""
    _check_space(space)
    eligible = conn.execute(select(func.count()).select_from(Item).where(_eligible(space))).scalar_one()
    join_on, where = _pending_filter(space, encoder)
    pending = conn.execute(
        select(func.count()).select_from(Item).outerjoin(ItemEmbedding, join_on).where(where)
    ).scalar_one()
    return int(eligible), int(pending)


def pending_items(
    conn: Connection, space: str, encoder: str, *, after_id: int = 0, limit: int = 4096
) -> list[PendingItem]:
    """Items needing work, by increasing id, after ``after_id`` (keyset pagination)."""
    _check_space(space)
    join_on, where = _pending_filter(space, encoder)
    stmt = (
        select(Item.id, Item.content_hash, Item.title, Item.description, Item.image)
        .outerjoin(ItemEmbedding, join_on)
        .where(where, Item.id > after_id)
        .order_by(Item.id)
        .limit(limit)
    )
    return [PendingItem(*row) for row in conn.execute(stmt)]


def pending_items_of(conn: Connection, space: str, encoder: str, external_ids: Sequence[str]) -> list[PendingItem]:
    """The items among ``external_ids`` that need work in ``space`` for ``encoder``, by id (the API's
    upserts embed exactly the items they stored, never other pending ones)."""
    _check_space(space)
    join_on, where = _pending_filter(space, encoder)
    out: list[PendingItem] = []
    ids = list(dict.fromkeys(external_ids))
    for start in range(0, len(ids), 5000):
        stmt = (
            select(Item.id, Item.content_hash, Item.title, Item.description, Item.image)
            .outerjoin(ItemEmbedding, join_on)
            .where(where, Item.external_id.in_(ids[start : start + 5000]))
            .order_by(Item.id)
        )
        out += [PendingItem(*row) for row in conn.execute(stmt)]
    return sorted(out, key=lambda it: it.id)


def current_hashes(conn: Connection, item_ids: Sequence[int]) -> dict[int, str]:
    """``internal id -> content_hash`` of these items now (a vector of an older version is not written)."""
    ids = sorted({int(i) for i in item_ids})
    out: dict[int, str] = {}
    for start in range(0, len(ids), 5000):
        out.update((int(i), str(h)) for i, h in conn.execute(
            select(Item.id, Item.content_hash).where(Item.id.in_(ids[start : start + 5000]))))
    return out


def write_vectors(engine: Engine, space: str, encoder: str, dim: int, rows: Sequence[VectorRow]) -> None:
    """Replace the rows of these items for (space, encoder) in one transaction (committed on return)."""
    _check_space(space)
    if not rows:
        return
    values = []
    for r in rows:
        blob = None
        if r.vector is not None:
            vec = np.asarray(r.vector, dtype="<f4")
            if vec.shape != (dim,):
                raise ValueError(f"item {r.item_id}: expected a ({dim},) vector, got shape {vec.shape}")
            blob = vec.tobytes()
        values.append(
            {
                "item_id": r.item_id,
                "space": space,
                "encoder": encoder,
                "content_hash": r.content_hash,
                "dim": dim,
                "vector": blob,
                "error": r.error,
            }
        )
    with engine.begin() as conn:
        conn.execute(
            delete(ItemEmbedding).where(
                ItemEmbedding.space == space,
                ItemEmbedding.encoder == encoder,
                ItemEmbedding.item_id.in_([r.item_id for r in rows]),
            )
        )
        conn.execute(insert(ItemEmbedding), values)


def load_item_vectors(
    engine: Engine, space: str, encoder_version: str, *, current_only: bool = True,
    item_ids: Sequence[int] | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """All stored vectors of one space and encoder version (of the internal ``item_ids`` only, when given).

    Args:
        current_only: skip rows embedded from an older version of the item (content hash differs).

    Returns:
        ``(item_ids, vectors)``: ``(n,)`` int64 internal item ids, increasing, and ``(n, dim)`` float32
        L2-normalised rows. Items whose input failed (``vector`` NULL) are left out. With no rows:
        ``(0,)`` and ``(0, 0)``.
    """
    _check_space(space)
    stmt = (
        select(ItemEmbedding.item_id, ItemEmbedding.dim, ItemEmbedding.vector)
        .where(
            ItemEmbedding.space == space,
            ItemEmbedding.encoder == encoder_version,
            ItemEmbedding.vector.is_not(None),
        )
        .order_by(ItemEmbedding.item_id)
    )
    if current_only:
        stmt = stmt.join(Item, and_(Item.id == ItemEmbedding.item_id, Item.content_hash == ItemEmbedding.content_hash))
    with engine.connect() as conn:
        if item_ids is None:
            rows = conn.execute(stmt).all()
        else:
            wanted = sorted({int(i) for i in np.asarray(item_ids).ravel()})
            rows = []
            for start in range(0, len(wanted), 5000):
                rows += conn.execute(stmt.where(ItemEmbedding.item_id.in_(wanted[start : start + 5000]))).all()
    if not rows:
        return np.empty(0, dtype=np.int64), np.empty((0, 0), dtype=np.float32)
    dims = {r.dim for r in rows}
    if len(dims) != 1:
        raise ValueError(f"mixed dimensions {sorted(dims)} for space {space!r}, encoder {encoder_version!r}")
    dim = dims.pop()
    ids = np.fromiter((r.item_id for r in rows), dtype=np.int64, count=len(rows))
    vectors = np.frombuffer(b"".join(r.vector for r in rows), dtype="<f4").reshape(len(rows), dim)
    return ids, vectors.astype(np.float32, copy=True)


def stored_errors(engine: Engine, space: str, encoder_version: str) -> list[tuple[int, str]]:
    """``(item_id, error)`` of current rows whose input failed, by item id."""
    _check_space(space)
    stmt = (
        select(ItemEmbedding.item_id, ItemEmbedding.error)
        .join(Item, and_(Item.id == ItemEmbedding.item_id, Item.content_hash == ItemEmbedding.content_hash))
        .where(ItemEmbedding.space == space, ItemEmbedding.encoder == encoder_version, ItemEmbedding.vector.is_(None))
        .order_by(ItemEmbedding.item_id)
    )
    with engine.connect() as conn:
        return [(int(i), str(e)) for i, e in conn.execute(stmt)]


def encoder_versions(engine: Engine, space: str) -> list[tuple[str, int]]:
    """``(encoder version, stored vectors)`` for ``space``, most vectors first."""
    _check_space(space)
    stmt = (
        select(ItemEmbedding.encoder, func.count())
        .where(ItemEmbedding.space == space, ItemEmbedding.vector.is_not(None))
        .group_by(ItemEmbedding.encoder)
        .order_by(func.count().desc())
    )
    with engine.connect() as conn:
        return [(str(e), int(n)) for e, n in conn.execute(stmt)]
