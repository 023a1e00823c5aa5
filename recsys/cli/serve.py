"""``recsys serve``: the development server (use gunicorn in production; see the README)."""

from __future__ import annotations

import click


@click.command("serve")
@click.option("--host", default=None, help="default: service.host")
@click.option("--port", type=int, default=None, help="default: service.port")
@click.pass_obj
def serve(obj, host: str | None, port: int | None) -> None:  # type: ignore[no-untyped-def]
    """Run the Flask app with its development server."""
    from services.app import create_app

    cfg = obj.config
    app = create_app(cfg)
    app.run(host=host or cfg.service.host, port=port or cfg.service.port, threaded=True)
