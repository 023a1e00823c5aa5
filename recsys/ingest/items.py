"""Bulk upsert of an item catalogue.

Items are matched on their external id: a new id is inserted, a row whose content changed is updated
(and gets a new ``content_hash``, so the embedding job re-embeds it), an unchanged row is a no-op. Bad
rows go to the reject file; a second row with an id already seen in the same file is rejected too (which
of two differing rows is right cannot be guessed). An image reference the access policy refuses (a path
outside the file's folder and ``images.roots``, a scheme other than http(s), a non-public IP literal;
:mod:`recsys.encoders.access`) rejects its row, naming the image column and why; nothing is read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, bindparam, select, update

from recsys.config import ItemMapping
from recsys.encoders.access import ImagePolicy, check_reference, is_url
from recsys.store.image_roots import record_root
from recsys.errors import ImageAccessError
from recsys.ingest.readers import BadLine, open_table
from recsys.ingest.report import IngestReport, RejectWriter
from recsys.ingest.values import RowError, is_missing, to_bool, to_float, to_id, to_text
from recsys.store.models import Item

log = logging.getLogger(__name__)

def resolve_image(value: Any, base_dir: Path, policy: ImagePolicy, column: str = "image") -> str | None:
    """An ``http(s)`` URL is kept as given; a path is resolved (relative to the input file's folder) and
    stored absolute. Raises :class:`RowError` naming ``column`` when the policy refuses the reference."""
    text = to_text(value)
    if not text:
        return None
    try:
        return check_reference(text, policy, base=base_dir)
    except ImageAccessError as exc:
        raise RowError(column, f"image {exc.source!r} refused: {exc.detail}") from None


def content_hash(fields: dict[str, Any]) -> str:
    """sha256 over the item's fields in canonical JSON (key order does not matter)."""
    blob = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def parse_item(row: dict[str, Any], mapping: ItemMapping, base_dir: Path, extra_cols: list[str],
               policy: ImagePolicy | None = None) -> dict[str, Any]:
    """One raw row -> the item's column values. Raises :class:`RowError`.

    ``policy``: which image references are accepted (default: paths under ``base_dir``, public URLs)."""
    ext = to_id(row.get(mapping.id), mapping.id)
    title_col = mapping.title or (mapping.text[0] if mapping.text else None)
    title = to_text(row.get(title_col)) if title_col else ""
    desc_parts = [to_text(row.get(c)) for c in mapping.text if c != title_col]
    description = "\n".join(p for p in desc_parts if p)
    category = to_text(row.get(mapping.category)) or None if mapping.category else None
    if policy is None:
        policy = ImagePolicy(roots=(str(base_dir.resolve()),))
    image = resolve_image(row.get(mapping.image), base_dir, policy, mapping.image) if mapping.image else None
    price = to_float(row.get(mapping.price), mapping.price) if mapping.price else None
    if price is not None and price < 0:
        raise RowError(mapping.price, f"a price must be >= 0, got {price}")
    available = to_bool(row.get(mapping.available), mapping.available, True) if mapping.available else True
    attributes = {c: row[c] for c in extra_cols if c in row and not is_missing(row[c])}
    values = {
        "title": title,
        "description": description,
        "category": category,
        "attributes": attributes,
        "image": image,
        "price": price,
        "available": available,
    }
    values["content_hash"] = content_hash(values)
    values["external_id"] = ext
    return values


def _mapped_columns(mapping: ItemMapping) -> dict[str, Any]:
    return {
        "--id": mapping.id,
        "--title": mapping.title,
        "--text": list(mapping.text),
        "--category": mapping.category,
        "--image": mapping.image,
        "--price": mapping.price,
        "--available": mapping.available,
        "--attributes": list(mapping.attributes) if mapping.attributes is not None else None,
    }


def ingest_items(
    engine: Engine,
    path: str | Path,
    mapping: ItemMapping,
    *,
    fmt: str | None = None,
    reject_path: str | Path,
    chunk_size: int = 50_000,
    policy: ImagePolicy | None = None,
) -> IngestReport:
    """Upsert the items in ``path`` (CSV / JSON Lines / Parquet) by external id.

    Every chunk is committed on its own, so the good rows land even when others are rejected.
    ``policy``: which image references are accepted (:func:`recsys.encoders.access.ingest_roots`; default:
    paths under the file's folder, public URLs). The file's folder is recorded as an image root when a
    local image from it was stored, so ``recsys embed`` and the service may read those images later.

    Raises:
        InputFormatError: before anything is written, for an unreadable file, a wrong format or a
            mapped column missing from the file.
    """
    t0 = time.perf_counter()
    reader = open_table(path, fmt)
    mapped = _mapped_columns(mapping)
    reader.require(mapped)
    extra = reader.extra_columns(mapped, mapping.attributes)
    base_dir = Path(path).resolve().parent
    if policy is None:
        policy = ImagePolicy(roots=(str(base_dir),))
    local_images = False
    report = IngestReport("items", str(path), reject_path=str(reject_path))
    seen: dict[str, int] = {}
    table = Item.__table__
    with RejectWriter(Path(reject_path), reader.position_name) as rejects:
        for chunk in reader.chunks(chunk_size):
            good: dict[str, dict[str, Any]] = {}
            for pos, row in chunk:
                report.rows += 1
                if isinstance(row, BadLine):
                    rejects.write(pos, None, row.reason, row.raw)
                    continue
                try:
                    values = parse_item(row, mapping, base_dir, extra, policy)
                except RowError as err:
                    rejects.write(pos, err.field, err.reason, row)
                    continue
                ext = values["external_id"]
                if ext in seen:
                    rejects.write(pos, mapping.id, f"duplicate id {ext!r}: first seen at {reader.position_name} {seen[ext]}", row)
                    continue
                seen[ext] = pos
                good[ext] = values
                local_images = local_images or (values["image"] is not None and not is_url(values["image"]))
            if good:
                _upsert(engine, table, good, report)
        report.rejected = rejects.count
        report.reject_reasons = dict(rejects.reasons)
    if local_images:
        record_root(engine, base_dir)
    if not report.rejected:
        report.reject_path = None
    report.seconds = time.perf_counter() - t0
    log.info(report.summary())
    return report


def _upsert(engine: Engine, table: Any, good: dict[str, dict[str, Any]], report: IngestReport) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    ids = list(good)
    with engine.begin() as conn:
        existing: dict[str, str] = {}
        for start in range(0, len(ids), 5_000):
            part = ids[start : start + 5_000]
            existing.update((k, h) for k, h in conn.execute(select(table.c.external_id, table.c.content_hash).where(table.c.external_id.in_(part))))
        new_rows = [dict(v, created_at=now, updated_at=now) for k, v in good.items() if k not in existing]
        changed = [
            {**{f"b_{k2}": v2 for k2, v2 in v.items()}, "b_updated_at": now}
            for k, v in good.items()
            if k in existing and existing[k] != v["content_hash"]
        ]
        if new_rows:
            conn.execute(table.insert(), new_rows)
        if changed:
            cols = [c for c in next(iter(good.values())) if c != "external_id"]
            stmt = (
                update(table)
                .where(table.c.external_id == bindparam("b_external_id"))
                .values({c: bindparam(f"b_{c}") for c in [*cols, "updated_at"]})
            )
            conn.execute(stmt, changed)
    report.inserted += len(new_rows)
    report.updated += len(changed)
    report.unchanged += len(good) - len(new_rows) - len(changed)


def upsert_item_records(engine: Engine, records: list[dict[str, Any]]) -> tuple[IngestReport, list[str]]:
    """Upsert items given as dicts with the fields of :class:`~recsys.store.models.Item` (``id``,
    ``title``, ``description``, ``category``, ``image``, ``price``, ``available``, ``attributes``).

    The API's ``PUT /v1/items`` path. Returns the report and the external ids that were inserted or
    changed (those need embedding). Image values are stored as given (URLs or paths the service reads).
    """
    t0 = time.perf_counter()
    report = IngestReport("items", "api")
    good: dict[str, dict[str, Any]] = {}
    for rec in records:
        values = {
            "title": to_text(rec.get("title")),
            "description": to_text(rec.get("description")),
            "category": to_text(rec.get("category")) or None,
            "attributes": dict(rec.get("attributes") or {}),
            "image": to_text(rec.get("image")) or None,
            "price": rec.get("price"),
            "available": bool(rec.get("available", True)),
        }
        values["content_hash"] = content_hash(values)
        values["external_id"] = to_id(rec.get("id"), "id")
        good[values["external_id"]] = values
        report.rows += 1
    with engine.connect() as conn:
        before = {
            k: h
            for k, h in conn.execute(
                select(Item.external_id, Item.content_hash).where(Item.external_id.in_(list(good)))
            )
        }
    if good:
        _upsert(engine, Item.__table__, good, report)
    report.seconds = time.perf_counter() - t0
    changed = [k for k, v in good.items() if before.get(k) != v["content_hash"]]
    return report, changed
