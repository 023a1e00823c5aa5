"""``recsys embed``: text and image vectors for every new or changed catalogue item."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from recsys.cli import AppContext
from recsys.engines.settings import ENGINES, LOCAL, RAY

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from recsys.embed.report import EmbedReport
    from recsys.encoders.access import ImagePolicy
    from recsys.encoders.settings import EncodersConfig
    from recsys.engines.settings import RayConfig


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
@click.option(
    "--engine",
    "engine_name",
    type=click.Choice(ENGINES),
    default=LOCAL,
    show_default=True,
    help="local: this process; ray: Ray Data model actors (needs pip install 'recsys[ray]')",
)
@click.option(
    "--ray-address",
    default=None,
    metavar="ADDR",
    help="with --engine ray: 'auto' (run on a node of a Ray cluster) or HEAD:6379; overrides ray.address; "
    "none: a local Ray instance",
)
@click.option(
    "--ray-actors",
    type=click.IntRange(min=1),
    default=None,
    help="with --engine ray: model actors per space, overrides ray.actors",
)
@click.pass_obj
def embed(
    app: AppContext,
    space: str,
    no_progress: bool,
    device: str | None,
    workers: int | None,
    engine_name: str,
    ray_address: str | None,
    ray_actors: int | None,
) -> None:
    """Embed items whose text or image vectors are missing or out of date.

    Incremental (by content hash and encoder version) and resumable: interrupt it at any time and run
    it again. Items whose image cannot be used get a text vector only; they are listed at the end.

    With --engine ray the encoders run in Ray Data model actors (a local Ray instance, or the cluster
    at --ray-address); this process reads the pending items and writes the vectors.
    """
    from recsys.store.db import engine_from_config, require_schema

    config = app.config
    cfg = config.encoders
    if device is not None:
        cfg = cfg.model_copy(update={"device": device})
    if workers is not None:
        cfg = cfg.model_copy(update={"image": cfg.image.model_copy(update={"workers": workers})})
    if engine_name != RAY and (ray_address is not None or ray_actors is not None):
        raise click.UsageError("--ray-address and --ray-actors need --engine ray")
    engine = engine_from_config(config)
    require_schema(engine)
    progress = not no_progress and sys.stderr.isatty()
    from recsys.store.image_roots import image_policy, image_roots

    policy = image_policy(config, image_roots(config, engine))  # folders of earlier ingests, data_dir/images, images.roots
    if engine_name == RAY:
        ray_cfg = config.ray
        if ray_address is not None:
            ray_cfg = ray_cfg.model_copy(update={"address": ray_address})
        if ray_actors is not None:
            ray_cfg = ray_cfg.model_copy(update={"actors": ray_actors})
        report = _embed_on_ray(engine, cfg, ray_cfg, space, progress, policy)
    else:
        report = _embed_locally(engine, cfg, space, progress, policy)
    for line in report.lines():
        click.echo(line)


def _embed_locally(engine: Engine, cfg: EncodersConfig, space: str, progress: bool, policy: ImagePolicy) -> EmbedReport:
    from recsys.embed import run_embed
    from recsys.encoders.factory import build_encoders, build_image_encoder, build_text_encoder

    if cfg.threads > 0:
        import torch

        torch.set_num_threads(cfg.threads)
    if space == "all":
        text_encoder, image_encoder = build_encoders(cfg)
    elif space == "text":
        text_encoder, image_encoder = build_text_encoder(cfg.text, cfg.device), None
    else:
        text_encoder, image_encoder = None, build_image_encoder(cfg.image, cfg.device)
    return run_embed(engine, cfg, text_encoder=text_encoder, image_encoder=image_encoder, progress=progress, policy=policy)


def _embed_on_ray(engine: Engine, cfg: EncodersConfig, ray_cfg: RayConfig, space: str, progress: bool,
                  policy: ImagePolicy) -> EmbedReport:
    from recsys.embed.ray_job import image_encoder_factory, run_embed_ray, text_encoder_factory
    from recsys.engines.ray_engine import ray_session

    text = text_encoder_factory(cfg) if space in ("all", "text") else None
    image = image_encoder_factory(cfg) if space in ("all", "image") else None
    with ray_session(ray_cfg.address, ray_cfg.num_cpus):
        return run_embed_ray(engine, cfg, ray_cfg, text_factory=text, image_factory=image, progress=progress,
                             policy=policy)
