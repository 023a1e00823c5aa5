"""gunicorn settings hooks: ``gunicorn -c python:services.gunicorn_conf 'services.wsgi:app'``.

``worker_exit`` writes the worker's queued impressions before it exits (``atexit`` does the same on a
normal interpreter exit; this covers exits that skip it). A worker killed outright leaves its spool,
which the next worker recovers (see :mod:`recsys.serving.impressions`).
"""

from __future__ import annotations

from typing import Any


def worker_exit(server: Any, worker: Any) -> None:
    app = getattr(worker, "wsgi", None)
    logger = getattr(app, "extensions", {}).get("recsys.impressions") if app is not None else None
    if logger is not None:
        logger.close()
