"""Candidate retrieval indexes: ScaNN, with an exact brute-force fallback.

Modules: ``base`` (the :class:`Retriever` contract, side buffer), ``filters`` (allowed / excluded rows,
top-k helpers), ``exact``, ``scann``, ``factory`` (:func:`build_index`, :func:`load_retriever`),
``manifest`` (on-disk layout), ``publish`` (versions, atomic
publish, :class:`IndexHandle`), ``synthetic`` (test and benchmark data). Names below are imported
lazily so that ``import recsys.config`` does not pull numpy in.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Retriever": "recsys.index.base",
    "ExactRetriever": "recsys.index.exact",
    "ScannRetriever": "recsys.index.scann",
    "ScannParams": "recsys.index.scann",
    "choose_params": "recsys.index.scann",
    "build_index": "recsys.index.factory",
    "measure_recall": "recsys.index.factory",
    "scann_available": "recsys.index.factory",
    "load_retriever": "recsys.index.factory",
    "read_manifest": "recsys.index.manifest",
    "publish": "recsys.index.publish",
    "activate": "recsys.index.publish",
    "active_version": "recsys.index.publish",
    "list_versions": "recsys.index.publish",
    "load_active": "recsys.index.publish",
    "prune": "recsys.index.publish",
    "IndexHandle": "recsys.index.publish",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'recsys.index' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
