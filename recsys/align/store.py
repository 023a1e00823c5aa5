"""The alignment at the IO edge: training pairs from SQL, artifacts on disk, the registry.

Training pairs are the items with both a current text vector and a current image vector (from
:func:`recsys.embed.load_item_vectors`) of the configured encoders. A trained alignment is saved under
``<artifacts>/align/<version>`` and registered as artifact kind ``align``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from sqlalchemy import Engine

from recsys.align.model import AlignmentModel
from recsys.align.settings import AlignConfig
from recsys.align.train import EpochCallback, train_alignment
from recsys.config import Config
from recsys.encoders.base import Encoder
from recsys.errors import ArtifactError

log = logging.getLogger(__name__)

KIND = "align"


def configured_versions(config: Config) -> tuple[str, str]:
    """Versions (name + weights hash) of the configured text and image encoders (loads their weights)."""
    from recsys.encoders.factory import build_encoders

    text_encoder, image_encoder = build_encoders(config.encoders)
    return text_encoder.version, image_encoder.version


def paired_vectors(
    engine: Engine, text_version: str, image_version: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items with both vectors: ``(item_ids (n,) int64, text (n, d_text), image (n, d_image))``, by item id."""
    from recsys.embed import IMAGE, TEXT, load_item_vectors

    t_ids, text = load_item_vectors(engine, TEXT, text_version)
    i_ids, image = load_item_vectors(engine, IMAGE, image_version)
    common, ti, ii = np.intersect1d(t_ids, i_ids, assume_unique=True, return_indices=True)
    return common, text[ti], image[ii]


def title_views(engine: Engine, item_ids: np.ndarray, encoder: Encoder, batch_size: int = 256) -> np.ndarray:
    """``(n, encoder.dim)`` vectors of each item's short text view, ``"<title>. <category>"``.

    Rows of items with neither a title nor a category are NaN (no view).
    """
    from sqlalchemy import select

    from recsys.store.models import Item

    wanted = [int(i) for i in item_ids]
    found: dict[int, str] = {}
    with engine.connect() as conn:
        for start in range(0, len(wanted), 5000):
            stmt = select(Item.id, Item.title, Item.category).where(Item.id.in_(wanted[start : start + 5000]))
            for item_id, title, category in conn.execute(stmt):
                found[int(item_id)] = ". ".join(p for p in ((title or "").strip(), (category or "").strip()) if p)
    texts = [found.get(i, "") for i in wanted]
    out = np.full((len(texts), encoder.dim), np.nan, dtype=np.float32)
    rows = [i for i, t in enumerate(texts) if t]
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        out[chunk] = encoder.encode([texts[i] for i in chunk])
    return out


def artifact_dir(config: Config, version: str) -> Path:
    return config.artifacts_path / KIND / version


def train_from_store(
    engine: Engine,
    config: Config,
    align: AlignConfig | None = None,
    *,
    versions: tuple[str, str] | None = None,
    text_encoder: Encoder | None = None,
    activate: bool = True,
    on_epoch: EpochCallback | None = None,
) -> tuple[AlignmentModel, Path]:
    """Train on the stored vectors, save under the artifacts folder and register the alignment.

    Args:
        versions: ``(text, image)`` encoder versions whose vectors to use; default: the configured
            encoders' (their weights are loaded once to compute them).
        text_encoder: encodes the items' short text views (:func:`title_views`) when
            ``align.text_view_prob > 0`` (default: built from the config); it must be the encoder of
            the stored text vectors.

    Raises:
        ArtifactError: fewer paired items than ``align.min_items`` (the message says how many there are).
    """
    from recsys.store.artifacts import register_artifact

    align = align or AlignConfig()
    text_version, image_version = versions or configured_versions(config)
    ids, text, image = paired_vectors(engine, text_version, image_version)
    if len(ids) < align.min_items:
        raise ArtifactError(
            f"{len(ids)} items have both a text vector ({text_version}) and an image vector ({image_version}); "
            f"training needs at least {align.min_items}: run `recsys embed` first"
        )
    views = None
    if align.text_view_prob > 0:
        if text_encoder is None:
            from recsys.encoders.factory import build_text_encoder

            text_encoder = build_text_encoder(config.encoders.text, config.encoders.device)
        if text_encoder.version != text_version:
            raise ArtifactError(
                f"the text encoder {text_encoder.version} for the short text views is not the one of the "
                f"stored text vectors ({text_version})"
            )
        views = title_views(engine, ids, text_encoder)
    log.info("training an alignment on %d items with text and image vectors", len(ids))
    model = train_alignment(
        text, image, align, text_encoder=text_version, image_encoder=image_version, on_epoch=on_epoch,
        text_views=views,
    )
    path = model.save(artifact_dir(config, model.version)).resolve()
    register_artifact(
        engine, KIND, model.version, str(path),
        config={"align": align.model_dump(mode="json"), "text_encoder": text_version, "image_encoder": image_version},
        metrics={k: v for k, v in model.metrics.items() if k != "members"}
        | {"best_epochs": [m["best_epoch"] for m in model.metrics["members"]]},
        activate=activate,
    )
    return model, path


def load_alignment(engine: Engine, config: Config, version: str | None = None) -> AlignmentModel | None:
    """The registered alignment ``version`` (default: the active one), or ``None`` when none is active.

    Raises:
        ArtifactError: ``version`` is not registered, or its files are missing or damaged.
    """
    from recsys.store.artifacts import active_artifact, get_artifact

    record = get_artifact(engine, KIND, version) if version else active_artifact(engine, KIND)
    if record is None:
        return None
    candidates = [Path(record.path)] if record.path else []
    candidates.append(artifact_dir(config, record.version))
    for path in candidates:
        if (path / "manifest.json").is_file():
            return AlignmentModel.load(path)
    raise ArtifactError(
        f"alignment {record.version} is registered but its files are missing (looked in "
        f"{', '.join(map(str, candidates))}); run `recsys train-align` again"
    )
