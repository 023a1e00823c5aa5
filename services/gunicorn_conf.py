"""gunicorn settings and hooks: ``gunicorn -c python:services.gunicorn_conf -w 4 'services.wsgi:app'``.

``preload_app``: the master loads the app (catalogue, models, indexes) once and forks the workers from it,
so that they share its memory copy-on-write instead of each loading its own copy. Around the fork:

- ``when_ready`` (master, app loaded, no worker forked yet): :func:`services.app.before_fork` stops the
  impression log's writer thread and closes the database connections; ``gc.freeze()`` moves every object
  loaded so far out of the collector's reach, so that collections in the workers do not write to (and so
  copy) the pages that hold them;
- ``post_fork`` (each worker, before it serves): :func:`services.app.after_fork` gives the worker its own
  database pool, locks, background reloader and impression log. A worker the master forks later (one
  replaced after a crash) starts from the state loaded at start and reloads what was published since at its
  first request, as every worker does after a publish;
- ``worker_exit`` writes the worker's queued impressions before it exits (``atexit`` does the same on a
  normal interpreter exit; this covers exits that skip it). A worker killed outright leaves its spool,
  which the next worker recovers (see :mod:`recsys.serving.impressions`).

Without ``preload_app`` (gunicorn without this config, or a config that sets it to ``False``) each worker loads the app
itself and the fork hooks do nothing.
"""

from __future__ import annotations

import gc
from typing import Any

preload_app = True


def _preloaded_app(server: Any) -> Any:
    """The app the master loaded (``preload_app``), else ``None`` (each worker loads its own: nothing to do)."""
    if not server.cfg.preload_app:
        return None
    return server.app.wsgi()  # loaded already: gunicorn keeps the preloaded callable


def _is_service(app: Any) -> bool:
    """Whether ``app`` is the service (``services.app.create_app``), not another WSGI app run with this config."""
    return app is not None and "recsys.config" in getattr(app, "extensions", {})


def when_ready(server: Any) -> None:
    app = _preloaded_app(server)
    if app is None:
        return
    if _is_service(app):
        from services.app import before_fork

        before_fork(app)
    gc.freeze()


def post_fork(server: Any, worker: Any) -> None:
    app = _preloaded_app(server)
    if _is_service(app):
        from services.app import after_fork

        after_fork(app)


def worker_exit(server: Any, worker: Any) -> None:
    app = getattr(worker, "wsgi", None)
    logger = getattr(app, "extensions", {}).get("recsys.impressions") if app is not None else None
    if logger is not None:
        logger.close()
