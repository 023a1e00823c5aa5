"""``recsys embed``: text and image vectors for every new or changed catalogue item."""

from __future__ import annotations

import sys

import click

from recsys.cli import AppContext


@click.command("embed")
@click.option(
    "--space",
    type=click.Choice(["all", "text", "image"]),
    default="all",
    show_default=True,
    help="which vectors to compute",
)
@click.option("--no-progress", is_flag=True, help="no progress bar (there is none when stderr is not a terminal)")
@click.option("--device", default=None, help="torch device, overrides encoders.device (cpu, cuda, auto)")
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="image decoding processes, overrides encoders.image.workers",
)
@click.pass_obj
def embed(app: AppContext, space: str, no_progress: bool, device: str | None, workers: int | None) -> None:
    """Embed items whose text or image vectors are missing or out of date.

    Incremental (by content hash and encoder version) and resumable: interrupt it at any time and run
    it again. Items whose image cannot be used get a text vector only; they are listed at the end.
    """
    from recsys.embed import run_embed
    from recsys.encoders.factory import build_encoders, build_image_encoder, build_text_encoder
    from recsys.store.db import engine_from_config, require_schema

    config = app.config
    cfg = config.encoders
    if device is not None:
        cfg = cfg.model_copy(update={"device": device})
    if workers is not None:
        cfg = cfg.model_copy(update={"image": cfg.image.model_copy(update={"workers": workers})})
    engine = engine_from_config(config)
    require_schema(engine)
    if cfg.threads > 0:
        import torch

        torch.set_num_threads(cfg.threads)
    if space == "all":
        text_encoder, image_encoder = build_encoders(cfg)
    elif space == "text":
        text_encoder, image_encoder = build_text_encoder(cfg.text, cfg.device), None
    else:
        text_encoder, image_encoder = None, build_image_encoder(cfg.image, cfg.device)
    progress = not no_progress and sys.stderr.isatty()
    report = run_embed(engine, cfg, text_encoder=text_encoder, image_encoder=image_encoder, progress=progress)
    for line in report.lines():
        click.echo(line)
