"""Serving: the in-memory runtime behind the Flask service (no Flask imports here).

``runtime.py`` is the façade the routes call; ``state.py`` the snapshot it serves, ``reload.py`` and
``updates.py`` how a snapshot is loaded or brought up to date, ``indexes.py`` index find-or-build and
publishing; one module per answer: ``similar.py``, ``feed.py``, ``search.py``, ``writes.py``.
"""

from recsys.serving.results import Feed, Ranked, RankedItem
from recsys.serving.runtime import Runtime

__all__ = ["Feed", "Ranked", "RankedItem", "Runtime"]
