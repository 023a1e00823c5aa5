"""What every served list shares: a ``request_id`` in the answer and an impression in the log."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

from flask import current_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from recsys.serving.impressions import ImpressionLog, ImpressionRecord, new_request_id

__all__ = ["experiment_feed", "experiment_search", "install", "log_served", "new_request_id"]

log = logging.getLogger(__name__)


def impression_log() -> ImpressionLog | None:
    return current_app.extensions.get("recsys.impressions")


def log_served(surface: str, user_id: str | None, item_ids: Sequence[str], versions: dict[str, str | None], *,
               experiment: str | None = None, variant: str | None = None,
               teams: Sequence[str | None] | None = None, request_id: str | None = None) -> str:
    """The list's request id (a new one unless given), the list queued for the impression log (when enabled).
    ``versions["model"]``: the model that ranked the list (an experiment variant's may not be the active one)."""
    request_id = request_id or new_request_id()
    logger = impression_log()
    if logger is not None:
        logger.log(ImpressionRecord(
            request_id=request_id, surface=surface, user_id=user_id, items=tuple(item_ids),
            teams=tuple(teams) if teams is not None else None, experiment=experiment, variant=variant,
            model_version=versions.get("model"), index_version=versions.get("index"), ts_ms=int(time.time() * 1000),
        ))
    return request_id


class ImpressionCollector:
    """``/metrics``: the impression log's counters (dropped lists above all)."""

    def __init__(self, logger: ImpressionLog) -> None:
        self.logger = logger

    def collect(self) -> Iterable[Any]:
        s = self.logger.stats()
        for name, doc in (("logged", "served lists accepted by the impression log"),
                          ("written", "served lists written to SQL"),
                          ("dropped", "served lists dropped (queue full or database refused)"),
                          ("recovered", "lists recovered from spools of stopped processes")):
            yield CounterMetricFamily(f"recsys_impressions_{name}", doc, value=s[name])
        yield GaugeMetricFamily("recsys_impressions_queued", "lists waiting for the writer", value=s["queued"])
        yield GaugeMetricFamily("recsys_impressions_queued_bytes",
                                "estimated memory of the lists in the queue (bounded by impressions.queue_bytes)",
                                value=s["queued_bytes"])


def install(app: Any, config: Any, engine: Any) -> None:
    """Create the app's impression log (``impressions.enabled``) and experiment book; export the counters."""
    if engine is None:
        return
    from pathlib import Path

    from recsys.experiments.store import ExperimentBook
    from recsys.serving.reranking import RerankerSlot
    from recsys.serving.variant_models import VariantRankers

    check_configured_models(engine, config.experiments)
    app.extensions["recsys.experiments"] = ExperimentBook(engine, config.experiments)
    app.extensions["recsys.reranker"] = RerankerSlot(engine)
    app.extensions["recsys.variant_rankers"] = VariantRankers(config, engine)
    if not config.impressions.enabled:
        return

    logger = ImpressionLog(engine, config.impressions, Path(config.data_dir) / "impressions-spool")
    app.extensions["recsys.impressions"] = logger
    app.extensions["recsys.metrics"].registry.register(ImpressionCollector(logger))


def check_configured_models(engine: Any, experiments: Any) -> None:
    """The config's experiments name registered feed model versions (a ``ConfigError`` stops the start, as
    ``recsys experiments create`` refuses them); an unreachable database only defers the check to serving."""
    from sqlalchemy.exc import SQLAlchemyError

    from recsys.experiments.store import check_model_versions

    for exp in experiments:
        try:
            check_model_versions(engine, exp)
        except SQLAlchemyError as exc:
            log.warning("experiments: cannot check the model versions of %s now: %s", exp.name, exc)


def experiment_feed(rt: Any, user_id: str, request_id: str, q: Any) -> Any:
    """The feed under the active feed experiment (first pages only), or ``None`` when none applies."""
    book = current_app.extensions.get("recsys.experiments")
    exp = book.active("feed") if book is not None and q.cursor is None else None
    if exp is None:
        return None
    from recsys.serving.experiments import serve_experiment

    return serve_experiment(rt, exp, user_id, request_id, q.k, exclude_seen=q.exclude_seen, category=q.category,
                            exclude=q.exclude, reranker=current_app.extensions.get("recsys.reranker"),
                            rankers=current_app.extensions.get("recsys.variant_rankers"))


def experiment_search(rt: Any, user_id: str | None, request_id: str, pinned_mode: str | None,
                      query: dict[str, Any]) -> Any:
    """``(answer, served)`` under the active search experiment, or ``None`` when none applies: no experiment,
    a request that pins its ``mode`` (the client chose), or an anonymous request to an A/B experiment."""
    book = current_app.extensions.get("recsys.experiments")
    exp = book.active("search") if book is not None and pinned_mode is None else None
    if exp is None or (exp.mode == "ab" and user_id is None):
        return None
    from recsys.serving.experiments import serve_search_experiment

    return serve_search_experiment(rt, exp, user_id, request_id, query)
