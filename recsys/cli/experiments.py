"""``recsys experiments``: create, list, stop and report experiments; ``recsys impressions prune``."""

from __future__ import annotations

import json
from typing import Any

import click

from recsys.errors import ConfigError


def _engine(ctx: click.Context) -> Any:
    from recsys.store.db import engine_from_config, require_schema

    engine = engine_from_config(ctx.obj.config)
    require_schema(engine)
    return engine


def _variant(text: str) -> dict[str, Any]:
    """``name=hybrid,ranker=hybrid,share=0.5,reranker=true,diversity=0.2,model_version=v3,weight.warm_pop=0.2``
    -> a dict (``weight.NAME`` keys go to ``weights``)."""
    out: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"expected key=value pairs separated by commas, got {part!r}", param_hint="--variant")
        if key.startswith("weight."):
            out.setdefault("weights", {})[key.removeprefix("weight.")] = value.strip()
        else:
            out[key] = value.strip()
    return out


@click.group("experiments")
def experiments() -> None:
    """A/B tests and interleaving experiments between rankers (see README, "Experiments")."""


@experiments.command("create")
@click.argument("name")
@click.option("--surface", default="feed", show_default=True, help="served list the experiment splits")
@click.option("--mode", type=click.Choice(["ab", "interleave"]), default="ab", show_default=True)
@click.option("--variant", "variants", multiple=True, required=True,
              help="name=...,ranker=hybrid|popularity[,share=0.5][,reranker=true][,diversity=0.2]"
                   "[,model_version=V][,weight.warm_pop=0.3] (repeat)")
@click.option("--salt", default="", help="assignment salt (default: the name)")
@click.option("--inactive", is_flag=True, help="store it without serving it yet")
@click.option("--replace", is_flag=True, help="overwrite a stored experiment of the same name")
@click.pass_context
def create(ctx: click.Context, name: str, surface: str, mode: str, variants: tuple[str, ...], salt: str,
           inactive: bool, replace: bool) -> None:
    """Store an experiment; serving processes apply it within seconds (first active one per surface)."""
    from pydantic import ValidationError

    from recsys.experiments.settings import ExperimentConfig
    from recsys.experiments.store import save_experiment

    try:
        exp = ExperimentConfig.model_validate({"name": name, "surface": surface, "mode": mode, "salt": salt,
                                               "active": not inactive, "variants": [_variant(v) for v in variants]})
    except ValidationError as exc:
        raise ConfigError(f"invalid experiment: {exc}") from None
    save_experiment(_engine(ctx), exp, ctx.obj.config.experiments, replace=replace)
    click.echo(f"experiment {name} stored ({mode}, {len(exp.variants)} variants, {'inactive' if inactive else 'active'})")


@experiments.command("stop")
@click.argument("name")
@click.pass_context
def stop(ctx: click.Context, name: str) -> None:
    """Stop serving a stored experiment (its impressions stay for the report)."""
    from recsys.experiments.store import find_experiment, save_experiment

    engine = _engine(ctx)
    exp = find_experiment(engine, ctx.obj.config.experiments, name)
    save_experiment(engine, exp.model_copy(update={"active": False}), ctx.obj.config.experiments, replace=True)
    click.echo(f"experiment {name} stopped")


@experiments.command("list")
@click.pass_context
def list_cmd(ctx: click.Context) -> None:
    """Every experiment (config, then stored) as JSON lines."""
    from recsys.experiments.store import all_experiments

    for e in all_experiments(_engine(ctx), ctx.obj.config.experiments):
        click.echo(json.dumps(e.model_dump(mode="json")))


@experiments.command("report")
@click.argument("name")
@click.option("--plot", "plot", type=click.Path(dir_okay=False), help="write a PNG of the report")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@click.option("--conversion-type", "conversions", multiple=True, default=("purchase",), show_default=True,
              help="event types counted as conversions (others attributed to a list count as clicks)")
@click.pass_context
def report(ctx: click.Context, name: str, plot: str | None, as_json: bool, conversions: tuple[str, ...]) -> None:
    """Per variant: lists, clicks, CTR, conversions, revenue with 95% intervals; interleaving wins and p."""
    from recsys.experiments.report import experiment_report, format_report, plot_report
    from recsys.experiments.store import find_experiment

    engine = _engine(ctx)
    rep = experiment_report(engine, find_experiment(engine, ctx.obj.config.experiments, name),
                            conversion_types=conversions)
    click.echo(json.dumps(rep.as_dict(), default=str) if as_json else format_report(rep))
    if plot:
        plot_report(rep, plot)
        click.echo(f"plot written to {plot}", err=True)


@click.group("impressions")
def impressions() -> None:
    """The impression log (served lists)."""


@impressions.command("prune")
@click.option("--days", type=float, default=None, help="keep this many days (default: impressions.retention_days)")
@click.pass_context
def prune(ctx: click.Context, days: float | None) -> None:
    """Delete served lists older than the retention."""
    from recsys.serving.impressions import prune_impressions

    keep = days if days is not None else ctx.obj.config.impressions.retention_days
    click.echo(f"deleted {prune_impressions(_engine(ctx), keep)} lists older than {keep:g} days")


@click.command("train-reranker")
@click.option("--source", type=click.Choice(["auto", "impressions", "events"]), default="auto", show_default=True,
              help="labels from logged lists with attributed clicks, or from each user's next events (auto: "
                   "impressions when any were logged)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-activate", is_flag=True, help="register without making it the served version")
@click.pass_context
def train_reranker_cmd(ctx: click.Context, source: str, seed: int, no_activate: bool) -> None:
    """Train the learned reranker (LightGBM LambdaRank over the feed's candidate features)."""
    from recsys.recommend.reranker_training import train_reranker

    rr = train_reranker(_engine(ctx), ctx.obj.config, source=source, seed=seed, activate=not no_activate)
    click.echo(json.dumps({"version": rr.version, **rr.info}, default=str))
