"""``create_app(config)``: the Flask application factory.

Loaded models and indexes live in ``app.extensions["recsys"]`` (a :class:`recsys.serving.Runtime`),
never in module globals. Routes are thin: parse and validate, call the runtime, serialise.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Flask, abort, g, request
from flask_orjson import OrjsonProvider
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from recsys.config import Config
from services.errors import register_error_handlers
from services.limits import TOO_LARGE, ChunkedBodyLimit

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Prometheus metrics of one app, in a registry of its own (no process-global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("recsys_requests", "HTTP requests", ["endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("recsys_request_latency_seconds", "HTTP request latency", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.versions = Gauge("recsys_artifact_info", "Loaded artifact versions (value 1)", ["kind", "version"],
                              registry=self.registry)

    def set_versions(self, versions: dict[str, str | None]) -> None:
        self.versions.clear()
        for kind, version in versions.items():
            self.versions.labels(kind=kind, version=version or "none").set(1)


_LIMITS: list[Any] = []


def limit_threads(n: int) -> None:
    """Cap BLAS (numpy, implicit) and torch threads of this process at ``n`` (0: leave them)."""
    if n <= 0:
        return
    import implicit.cpu.als  # noqa: F401 - load its BLAS before the limit is set
    from threadpoolctl import threadpool_limits

    _LIMITS.append(threadpool_limits(limits=n))  # stays in force while referenced
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def create_app(config: Config, runtime: Any = None) -> Flask:
    """Build the app. ``runtime`` defaults to ``recsys.serving.Runtime.from_config(config)``."""
    app = Flask("recsys")
    app.config["MAX_CONTENT_LENGTH"] = config.service.max_body_bytes
    app.json = OrjsonProvider(app)  # orjson: keys in insertion order, several times faster than the json module
    app.wsgi_app = ChunkedBodyLimit(app.wsgi_app, config.service.max_body_bytes)  # type: ignore[method-assign]
    if runtime is None:
        from recsys.serving import Runtime

        limit_threads(config.service.threads)
        runtime = Runtime.from_config(config)
    metrics = Metrics()
    app.extensions["recsys"] = runtime
    app.extensions["recsys.config"] = config
    app.extensions["recsys.metrics"] = metrics

    @app.before_request
    def _start() -> None:
        g.t0 = time.perf_counter()
        if request.environ.get(TOO_LARGE):
            abort(413)
        refresh = getattr(runtime, "refresh_if_changed", None)
        if refresh is not None and request.endpoint not in (None, "health.healthz", "health.metrics"):
            refresh()

    @app.after_request
    def _observe(response):  # type: ignore[no-untyped-def]
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.requests.labels(endpoint, request.method, str(response.status_code)).inc()
        if hasattr(g, "t0"):
            metrics.latency.labels(endpoint).observe(time.perf_counter() - g.t0)
        return response

    register_error_handlers(app)
    from services.api import served

    served.install(app, config, getattr(runtime, "engine", None))
    from services.api import events, health, items, search, users

    for bp in (health.bp, items.bp, users.bp, search.bp, events.bp):
        app.register_blueprint(bp)
    from services.ui import register_ui

    register_ui(app)  # the web playground (/ui) and item pictures (/media)
    return app


def before_fork(app: Flask) -> None:
    """In gunicorn's master, after it loaded the app (``preload_app``) and before it forks the workers
    (``services/gunicorn_conf.py``): stop what must not be copied into a child. The impression log's writer
    thread is stopped and its (empty) spool removed, the database connections are closed; the loaded
    models and indexes stay, shared with the workers copy-on-write."""
    logger = app.extensions.get("recsys.impressions")
    if logger is not None:
        logger.close()
    runtime = app.extensions.get("recsys")
    if runtime is not None and hasattr(runtime, "before_fork"):
        runtime.before_fork()


def after_fork(app: Flask) -> None:
    """In each forked worker, before it serves: its own database pool, locks and reloader
    (``Runtime.after_fork``) and its own impression log (queue, spool file, writer thread)."""
    runtime = app.extensions.get("recsys")
    if runtime is not None and hasattr(runtime, "after_fork"):
        runtime.after_fork()
    logger = app.extensions.get("recsys.impressions")
    if logger is not None:
        logger.reopen()
