"""Feed rankers of experiment variants: another registered model version, or other blend weights.

A variant that names a ``model_version`` other than the active one is served by that model laid over the
current snapshot's items (:func:`recsys.serving.reload.feed_ranker`, as the active one is). Those rankers
are kept per snapshot in a small LRU (``service.experiment_models``): a new snapshot (a reload, an item
upsert) lays them over its items anew on first use. Blend weight overrides are a shallow copy of the
ranker whose model carries the overridden :class:`~recsys.ranking.hybrid.HybridParams` (arrays shared).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import replace
from typing import Any

from recsys.errors import ArtifactError
from recsys.experiments.settings import VariantConfig

log = logging.getLogger(__name__)


def with_weights(ranker: Any, weights: dict[str, float]) -> Any:
    """``ranker`` scoring with some blend weights overridden (no copy of its arrays); itself when none are."""
    if not weights:
        return ranker
    model = replace(ranker.model, params=replace(ranker.model.params, **weights))
    return replace(ranker, model=model)


class VariantRankers:
    """The feed rankers a serving process's experiment variants use. Thread-safe."""

    def __init__(self, config: Any, engine: Any, max_models: int | None = None) -> None:
        self.config = config
        self.engine = engine
        self.max_models = config.service.experiment_models if max_models is None else max_models
        self._lock = threading.Lock()  # one model loaded at a time; readers of loaded ones wait for it only
        self._loaded: OrderedDict[tuple[int, str], tuple[Any, Any]] = OrderedDict()  # -> (snapshot, ranker)

    def ranker(self, st: Any, variant: VariantConfig) -> Any:
        """The variant's ranker over snapshot ``st`` (its model version, its blend weights).

        Raises:
            ArtifactError: the version is no longer registered or loadable, or no feed model is active
                for a variant that uses the active one.
        """
        base = self._model_ranker(st, variant.model_version)
        if base is None:
            raise ArtifactError(f"variant {variant.name!r} needs a trained feed model and none is active")
        return with_weights(base, variant.weights)

    def loaded_versions(self) -> list[str]:
        with self._lock:
            return [v for _, v in self._loaded]

    def _model_ranker(self, st: Any, version: str | None) -> Any:
        if version is None or version == st.feed_version:
            return st.feed
        key = (id(st), version)
        with self._lock:
            hit = self._loaded.get(key)
            if hit is not None and hit[0] is st:
                self._loaded.move_to_end(key)
                return hit[1]
            ranker = self._load(st, version)
            for old in [k for k, (snap, _) in self._loaded.items() if snap is not st]:
                del self._loaded[old]  # rankers over an older snapshot: never asked for again, free them
            if self.max_models > 0:
                self._loaded[key] = (st, ranker)
                while len(self._loaded) > self.max_models:
                    self._loaded.popitem(last=False)
            return ranker

    def _load(self, st: Any, version: str) -> Any:
        from recsys.recommend.model import load_feed_model
        from recsys.serving.indexes import user_items_index
        from recsys.serving.reload import feed_ranker

        try:
            model = load_feed_model(self.engine, version)
        except ArtifactError as exc:
            raise ArtifactError(f"experiment variant model {version!r}: {exc}") from None
        if model is None:  # pragma: no cover - a named version either loads or raises
            raise ArtifactError(f"feed model {version!r} is not registered")
        ranker = feed_ranker(self.config, self.engine, model, st.ids, user_items_index(self.config, self.engine, model))
        log.info("experiments: feed model %s loaded for a variant (%d items)", version, len(st.ids))
        return ranker
