"""WSGI entry point for gunicorn: ``gunicorn 'services.wsgi:app'``.

Configuration comes from ``$RECSYS_CONFIG`` / ``./config.yaml`` and ``RECSYS_*`` overrides, read here at
the edge and passed to ``create_app``.
"""

from __future__ import annotations

import os

from recsys.config import load_config
from services.app import create_app

app = create_app(load_config(env=os.environ))
