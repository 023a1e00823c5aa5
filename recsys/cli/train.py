"""``recsys train``: CF factors from the SQL events, saved as a versioned artifact."""

from __future__ import annotations

import json

import click


@click.command("train")
@click.option("--model", type=click.Choice(["als", "bpr"]), default=None,
              help="override cf.model (default: the config's, ALS unless changed)")
@click.option("--version", default=None, help="artifact version (default: UTC time + model name)")
@click.option("--activate/--no-activate", default=True, show_default=True,
              help="make the new version the active one")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.pass_obj
def train(  # type: ignore[no-untyped-def]
    obj, model: str | None, version: str | None, activate: bool, as_json: bool
) -> None:
    """Train implicit ALS (or BPR) on the interaction matrix built from the events table."""
    from recsys.cf.train import train_from_sql
    from recsys.store.db import engine_from_config, require_schema

    config = obj.config
    if model is not None and model != config.cf.model:
        config = config.model_copy(update={"cf": config.cf.model_copy(update={"model": model})})
    engine = engine_from_config(config)
    require_schema(engine)
    result = train_from_sql(engine, config, version=version, activate=activate)
    if as_json:
        click.echo(json.dumps({"version": result.version, "path": str(result.path), "metrics": result.metrics}))
        return
    m = result.metrics
    click.echo(
        f"trained {config.cf.model} ({config.cf.factors} factors) on {m['users']} users x {m['items']} items, "
        f"{m['pairs']} pairs from {m['events']} events: matrix {m['matrix_seconds']:.2f}s, fit {m['fit_seconds']:.2f}s"
    )
    click.echo(f"artifact cf/{result.version} at {result.path}{' (active)' if activate else ''}")
