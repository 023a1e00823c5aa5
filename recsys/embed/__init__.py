"""Batch embedding job: item texts and images -> vectors in ``item_embeddings`` (``recsys embed``).

Importing this package does not import torch; the encoders are built by the caller
(:mod:`recsys.encoders.factory`) and passed in.
"""

from __future__ import annotations

from recsys.embed.job import embed_images, embed_texts, run_embed
from recsys.embed.report import EmbedReport, ImageFailure, SpaceReport
from recsys.embed.store import IMAGE, SPACES, TEXT, encoder_versions, item_text, load_item_vectors, stored_errors

__all__ = [
    "IMAGE",
    "SPACES",
    "TEXT",
    "EmbedReport",
    "ImageFailure",
    "SpaceReport",
    "embed_images",
    "embed_texts",
    "encoder_versions",
    "item_text",
    "load_item_vectors",
    "run_embed",
    "stored_errors",
]
