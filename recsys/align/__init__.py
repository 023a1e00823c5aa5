"""Contrastive alignment of text and image embeddings into one joint space.

- :func:`train_alignment` (``train.py``): projection heads learnt with a symmetric InfoNCE loss on
  frozen encoder vectors (a pure function of two arrays; torch is imported only when it runs).
- :class:`AlignmentModel` (``model.py``): the trained heads, numpy inference, ``save`` / ``load``.
- :func:`fuse_embeddings` (``fusion.py``): the fused item embedding used downstream.
- ``store.py``: training pairs from SQL, artifacts and the registry; ``metrics.py``: cross-modal retrieval
  metrics (R@k, MRR). The H&M protocol runs in :mod:`recsys.evaluation.hm_search`.
"""

from recsys.align.fusion import fuse_embeddings
from recsys.align.model import AlignmentModel, Head
from recsys.align.settings import AlignConfig
from recsys.align.train import train_alignment

__all__ = ["AlignConfig", "AlignmentModel", "Head", "fuse_embeddings", "train_alignment"]
