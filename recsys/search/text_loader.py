"""Find or build the published lexical index of the search catalogue, and read the items' text fields.

The lexical index is a versioned artifact beside the vector indexes: ``<artifacts>/index-lexical/<version>``,
registered as kind ``index-lexical``, published atomically by :func:`recsys.index.publish.publish` under the
same build lock as the vector indexes (workers starting together build once). A process that starts takes
the active version when it was built from the same documents (a fingerprint in its manifest), or brings it
up to date through its side buffer when few rows differ (a hash per row is saved with it), else builds and
publishes a new one. ``recsys index rebuild`` publishes a new one (side buffer folded in).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, select

from recsys.config import Config
from recsys.errors import ArtifactError
from recsys.search.hybrid import SearchText
from recsys.search.lexical import LexicalIndex
from recsys.search.text import item_document
from recsys.store.models import Item

log = logging.getLogger(__name__)

LEXICAL_INDEX = "lexical"
"""Name of the published lexical index (root ``<artifacts>/index-lexical``, registry kind ``index-lexical``)."""
ROW_HASHES = "row_hashes.npy"


@dataclass(frozen=True)
class ItemTexts:
    """Text fields of some items, in the order asked for."""

    documents: list[str]
    categories: list[str | None]
    attributes: list[dict[str, Any]]
    prices: list[float | None]


def read_item_texts(engine: Engine, external_ids: Sequence[str]) -> ItemTexts:
    """Title, description, category, attributes and price of ``external_ids`` (unknown ids: empty)."""
    got: dict[str, tuple[str, str | None, dict[str, Any], float | None]] = {}
    wanted = list(external_ids)
    cols = (Item.external_id, Item.title, Item.description, Item.category, Item.attributes, Item.price)
    with engine.connect() as conn:
        for start in range(0, len(wanted), 5000):
            chunk = wanted[start : start + 5000]
            for ext, title, desc, cat, attrs, price in conn.execute(select(*cols).where(Item.external_id.in_(chunk))):
                got[ext] = (item_document(title, desc, cat, attrs), cat, dict(attrs or {}), price)
    rows = [got.get(e, ("", None, {}, None)) for e in wanted]
    return ItemTexts([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])


def _row_hashes(documents: Sequence[str]) -> np.ndarray:
    return np.array([int.from_bytes(hashlib.blake2b(d.encode(), digest_size=8).digest(), "little")
                     for d in documents], dtype=np.uint64)


def _fingerprint(hashes: np.ndarray, config: Config) -> str:
    s = config.search
    return hashlib.sha1(hashes.tobytes() + f"k1={s.bm25_k1},b={s.bm25_b}".encode()).hexdigest()[:16]


def build_search_text(engine: Engine, config: Config, external_ids: Sequence[str], *,
                      force: bool = False) -> SearchText:
    """The :class:`SearchText` of the catalogue rows ``external_ids`` (the published lexical index found,
    derived or built; ``force``: build and publish a new one)."""
    from recsys.index.publish import root_lock

    texts = read_item_texts(engine, external_ids)
    root = config.artifacts_path / f"index-{LEXICAL_INDEX}"
    with root_lock(root, ".build.lock"):
        lexical, version = _find_or_build(engine, config, root, texts.documents, force=force)
    return SearchText.build(lexical, texts.categories, texts.attributes,
                            np.array([np.nan if p is None else p for p in texts.prices], dtype=np.float64),
                            config.search, version)


def _active(engine: Engine, root: Path) -> str | None:
    from recsys.index.manifest import MANIFEST
    from recsys.index.publish import active_version
    from recsys.store.artifacts import active_artifact

    rec = active_artifact(engine, f"index-{LEXICAL_INDEX}")
    if rec is not None and (root / rec.version / MANIFEST).is_file():
        return rec.version
    return active_version(root)


def _find_or_build(engine: Engine, config: Config, root: Path, documents: list[str], *,
                   force: bool) -> tuple[LexicalIndex, str | None]:
    from recsys.index.publish import prune, publish

    hashes = _row_hashes(documents)
    fingerprint = _fingerprint(hashes, config)
    current = None if force else _active(engine, root)
    if current is not None:
        try:
            lexical = LexicalIndex.load(root / current)
            if lexical.info.get("fingerprint") == fingerprint and lexical.size == len(documents):
                return lexical, current
            derived = _derive(lexical, np.load(root / current / ROW_HASHES), hashes, documents, config)
            if derived is not None:
                return derived, current
        except (ArtifactError, OSError, ValueError) as exc:
            log.warning("lexical index: cannot use version %s (%s); building a new one", current, exc)
    s = config.search
    lexical = LexicalIndex.build(documents, k1=s.bm25_k1, b=s.bm25_b)
    lexical.info["fingerprint"] = fingerprint
    try:
        version = publish(_Saver(lexical, hashes), root, engine=engine, kind=f"index-{LEXICAL_INDEX}")
        prune(root, keep=3)
    except Exception as exc:  # noqa: BLE001 - serving goes on with the in-memory index
        if force:
            raise
        log.warning("lexical index: could not publish (%s); serving an unpublished in-memory index", exc)
        version = None
    log.info("lexical index %s built over %d items in %ss", version, len(documents), lexical.info.get("build_seconds"))
    return lexical, version


def _derive(lexical: LexicalIndex, old: np.ndarray, hashes: np.ndarray, documents: list[str],
            config: Config) -> LexicalIndex | None:
    """The published index with the rows that differ in its side buffer, or ``None`` when too many differ."""
    n_base = min(len(old), len(hashes))
    changed = np.flatnonzero(old[:n_base] != hashes[:n_base])
    rows = np.concatenate([changed, np.arange(len(old), len(hashes))]).astype(np.int64)
    limit = min(config.index.max_buffered, int(config.index.max_buffered_fraction * len(documents)))
    if len(old) > len(hashes) or len(rows) > limit:
        return None
    log.info("lexical index: published version brought up to date through its side buffer (%d rows)", len(rows))
    return lexical.with_documents(rows, [documents[r] for r in rows], len(documents))


class _Saver:
    """What :func:`recsys.index.publish.publish` needs of an artifact: ``info`` and ``save(directory)``."""

    def __init__(self, lexical: LexicalIndex, hashes: np.ndarray) -> None:
        self.lexical = lexical
        self.hashes = hashes
        self.info = lexical.info

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / ROW_HASHES, self.hashes)
        self.lexical.save(directory)
