"""Cross-modal retrieval: the H&M protocol of ``EVALUATION-hm.md`` (metrics: :mod:`recsys.align.metrics`).

Protocol (``hm-fashion-sample``, 8,000 articles): ``numpy.random.default_rng(0).permutation(8000)``
orders the items of ``items.csv`` (file order); the first 1,600 are the test set, the other 6,400 may be
used for training. A query is an item's text (product name, type, colour, section, description); its
target is the item's own photo among the 1,600 test photos (text → image), and the reverse
(image → text). Reported: R@1, R@10 and MRR for each direction.

Everything here except :func:`load_hm_items` is a pure function of arrays.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.align.metrics import DEFAULT_KS, DIRECTIONS, chance_metrics, crossmodal_metrics
from recsys.align.model import AlignmentModel, l2_normalize
from recsys.align.settings import AlignConfig
from recsys.errors import InputFormatError

QUERY_COLUMNS: tuple[str, ...] = (
    "prod_name",
    "product_type_name",
    "colour_group_name",
    "section_name",
    "detail_desc",
)
"""The ``items.csv`` columns that make an H&M query, in order (EVALUATION-hm.md)."""

PROTOCOL_SEED = 0
PROTOCOL_N_TEST = 1600


@dataclass(frozen=True)
class ProtocolSplit:
    """Row numbers (into the item list, file order) of the protocol's test and training items."""

    test: np.ndarray
    """``(n_test,)`` int64, in permutation order."""
    train: np.ndarray
    """``(n - n_test,)`` int64, in permutation order."""


def protocol_split(n_items: int, n_test: int = PROTOCOL_N_TEST, seed: int = PROTOCOL_SEED) -> ProtocolSplit:
    """The split of EVALUATION-hm.md: ``default_rng(seed).permutation(n_items)``, first ``n_test`` = test."""
    if not 0 < n_test < n_items:
        raise ValueError(f"n_test must be in (0, {n_items}), got {n_test}")
    perm = np.random.default_rng(seed).permutation(n_items)
    return ProtocolSplit(test=perm[:n_test].astype(np.int64), train=perm[n_test:].astype(np.int64))


def validation_split(train: np.ndarray, n_val: int, seed: int = 1) -> ProtocolSplit:
    """Carve a pseudo-test set out of the training rows, for choosing hyper-parameters.

    Returns a :class:`ProtocolSplit` whose ``test`` holds ``n_val`` of ``train`` and whose ``train``
    holds the rest; the protocol's real test rows are never touched.
    """
    if not 0 < n_val < len(train):
        raise ValueError(f"n_val must be in (0, {len(train)}), got {n_val}")
    perm = np.random.default_rng(seed).permutation(len(train))
    return ProtocolSplit(test=np.asarray(train)[perm[:n_val]], train=np.asarray(train)[perm[n_val:]])


def query_text(row: Mapping[str, str], columns: Sequence[str] = QUERY_COLUMNS) -> str:
    """Join the non-empty query fields of one item with ``". "``."""
    parts = [str(row.get(c) or "").strip() for c in columns]
    return ". ".join(p for p in parts if p)


@dataclass(frozen=True)
class HMItems:
    """The rows of an H&M ``items.csv`` needed by the protocol, in file order."""

    ids: list[str]
    texts: list[str]
    """Query text of each item (:func:`query_text`)."""
    images: list[Path]
    """Absolute image path of each item."""


def load_hm_items(path: str | Path, columns: Sequence[str] = QUERY_COLUMNS) -> HMItems:
    """Read ``items.csv`` of ``hm-fashion-sample`` (ids kept as strings; image paths resolved).

    Raises:
        InputFormatError: unreadable file, missing column, or an item without an image.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise InputFormatError(f"cannot read {path}: {exc.strerror or exc}") from exc
    need = ("article_id", "image", *columns)
    if not rows:
        raise InputFormatError(f"{path}: no rows")
    missing = [c for c in need if c not in rows[0]]
    if missing:
        raise InputFormatError(f"{path}: missing column(s) {missing}; the protocol needs {list(need)}")
    no_image = [r["article_id"] for r in rows if not r["image"]]
    if no_image:
        raise InputFormatError(f"{path}: {len(no_image)} item(s) without an image, e.g. {no_image[:3]}")
    return HMItems(
        ids=[r["article_id"] for r in rows],
        texts=[query_text(r, columns) for r in rows],
        images=[(path.parent / r["image"]).resolve() for r in rows],
    )


def format_table(rows: Mapping[str, Mapping[str, Mapping[str, float]]], ks: Sequence[int] = DEFAULT_KS) -> str:
    """A Markdown table: one line per (method, direction) with R@k and MRR columns."""
    cols = [f"R@{k}" for k in ks] + ["MRR"]
    lines = ["| method | direction | " + " | ".join(cols) + " |", "| --- | --- | " + " | ".join("---" for _ in cols) + " |"]
    for method, by_dir in rows.items():
        for direction in DIRECTIONS:
            if direction not in by_dir:
                continue
            m = by_dir[direction]
            name = direction.replace("_to_", " → ")
            lines.append(f"| {method} | {name} | " + " | ".join(f"{m[c]:.3f}" for c in cols) + " |")
    return "\n".join(lines)


LINEAR_BASELINE = AlignConfig(
    head="linear", standardize=False, dim=256, epochs=40, lr=1e-3, weight_decay=0.01, batch_size=256,
    schedule="constant", warmup_epochs=0, dropout=0.0, label_smoothing=0.0, ensemble=1, patience=40,
)
"""The baseline recipe of EVALUATION-hm.md (one linear map per side, dim 256, 40 epochs, AdamW 1e-3,
batch 256), here with the same held-out early stopping as every alignment (best epoch kept)."""


@dataclass(frozen=True)
class ProtocolResult:
    """Figures of one protocol run: method name → direction → metric."""

    rows: dict[str, dict[str, dict[str, float]]]
    n_test: int
    n_train: int
    notes: list[str]
    model: AlignmentModel | None = None
    """The trained alignment (not serialised)."""

    def to_json(self) -> dict[str, object]:
        return {"n_test": self.n_test, "n_train": self.n_train, "methods": self.rows, "notes": self.notes}


def unaligned_rows(text: np.ndarray, image: np.ndarray) -> tuple[dict[str, dict[str, dict[str, float]]], list[str]]:
    """What can be said of the raw encoder vectors of ``n`` paired test items, without any training.

    When both encoders share a space (same dimension, e.g. CLIP's two towers) the raw cosine is
    measured. Otherwise the two spaces are unrelated (e.g. 384-d MiniLM vs 1,280-d EfficientNet), no
    cosine between them exists, and any fixed pairing of their axes would rank at chance: the exact
    expectation of a random ranking is reported instead, labelled as such.
    """
    n = len(text)
    if text.shape[1] == image.shape[1]:
        return {"unaligned (raw cosine)": crossmodal_metrics(l2_normalize(text), l2_normalize(image))}, []
    chance = chance_metrics(n)
    note = (
        f"unaligned: the text ({text.shape[1]}-d) and image ({image.shape[1]}-d) encoders have unrelated "
        f"spaces, so no cross-modal score exists without training; the row is the exact expectation of a "
        f"random ranking of {n} items"
    )
    return {"unaligned (chance)": {d: dict(chance) for d in DIRECTIONS}}, [note]


def run_protocol(
    text: np.ndarray,
    image: np.ndarray,
    split: ProtocolSplit,
    config: AlignConfig | None = None,
    *,
    text_encoder: str = "",
    image_encoder: str = "",
    baselines: Mapping[str, AlignConfig] | None = None,
) -> ProtocolResult:
    """Train an alignment on ``split.train`` and measure both directions on ``split.test``.

    Args:
        text: ``(n_items, d_text)`` frozen text vectors of every item (row = item).
        image: ``(n_items, d_image)`` frozen image vectors of the same items.
        split: which rows train (the alignment carves its early-stopping split out of these) and test.
        config: hyper-parameters of the alignment (default ``AlignConfig()``).
        baselines: further alignments to train and measure the same way, by row name (e.g. the
            linear recipe of EVALUATION-hm.md, :data:`LINEAR_BASELINE`).
    """
    from recsys.align.train import train_alignment

    cfg = config or AlignConfig()
    rows, notes = unaligned_rows(text[split.test], image[split.test])
    for name, base_cfg in (baselines or {}).items():
        base = train_alignment(text[split.train], image[split.train], base_cfg)
        rows[name] = crossmodal_metrics(base.project_text(text[split.test]), base.project_image(image[split.test]))
    model = train_alignment(
        text[split.train], image[split.train], cfg, text_encoder=text_encoder, image_encoder=image_encoder
    )
    label = f"aligned ({cfg.head}, dim {cfg.dim} x {cfg.ensemble})"
    rows[label] = crossmodal_metrics(model.project_text(text[split.test]), model.project_image(image[split.test]))
    return ProtocolResult(rows=rows, n_test=len(split.test), n_train=len(split.train), notes=notes, model=model)
