"""The web playground under ``/ui`` and item pictures under ``/media``.

Server-rendered Jinja pages (autoescaped) with a small static stylesheet and script, no build step and
nothing fetched from elsewhere. The pages call the same :class:`~recsys.serving.Runtime` methods the JSON
API calls (no second ranking path) plus read-only SQL look-ups (:mod:`recsys.serving.browse`). They are
read-only: the feed's click / buy buttons post to the JSON API (``POST /v1/events``) from the browser
with the API key the visitor typed in (kept in the tab's ``sessionStorage``, sent as ``X-API-Key``).
"""

from __future__ import annotations

from flask import Flask


def register_ui(app: Flask) -> None:
    from services.ui import experiments as _experiment_pages  # noqa: F401 - adds its routes to the ui blueprint
    from services.ui.media import bp as media_bp
    from services.ui.views import bp as ui_bp

    app.register_blueprint(ui_bp)
    app.register_blueprint(media_bp)
