"""The Flask service: ``create_app(config)`` builds the app; see ``services/app.py``."""

from services.app import create_app

__all__ = ["create_app"]
