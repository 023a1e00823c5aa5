"""``recsys ingest items|events FILE``: bulk loading with column mapping and reject files."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import click

from recsys.config import Config, EventMapping, ItemMapping
from recsys.errors import ConfigError
from recsys.ingest import ingest_events, ingest_items
from recsys.store.db import engine_from_config, require_schema


def _cols(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(c.strip() for c in value.split(",") if c.strip())


def _preset(config: Config, name: str | None, kind: str) -> Any:
    if name is None:
        return ItemMapping() if kind == "items" else EventMapping()
    preset = config.ingest.presets.get(name)
    if preset is None:
        raise ConfigError(f"unknown preset {name!r}; presets in config (ingest.presets): {', '.join(sorted(config.ingest.presets)) or '(none)'}")
    return preset.items if kind == "items" else preset.events


def _reject_path(config: Config, file: str, kind: str, given: str | None) -> Path:
    if given:
        return Path(given)
    stamp = dt.datetime.now().strftime("%Y%m%dT%H%M%S")
    return config.data_dir / "rejects" / f"{Path(file).stem}-{kind}-{stamp}.jsonl"


_common = [
    click.argument("file", type=click.Path(dir_okay=False)),
    click.option("--preset", help="named column mapping from config (ingest.presets), e.g. movielens, hm"),
    click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "parquet"]), help="default: from the file suffix"),
    click.option("--rejects", help="reject file (JSON Lines); default <data_dir>/rejects/<file>-<kind>-<time>.jsonl"),
    click.option("--attributes", help="comma-separated columns to keep as attributes (default: every unmapped column)"),
]


def _apply(options: list[Any]):  # type: ignore[no-untyped-def]
    def deco(f):  # type: ignore[no-untyped-def]
        for opt in reversed(options):
            f = opt(f)
        return f

    return deco


@click.group("ingest")
def ingest() -> None:
    """Load an item catalogue or an event log into the database."""


@ingest.command("items")
@_apply(_common)
@click.option("--id", "id_col", help="item id column (default: item_id)")
@click.option("--title", help="title column (default: the first --text column)")
@click.option("--text", help="comma-separated text columns (title + description fed to the text encoder)")
@click.option("--category", help="category column")
@click.option("--image", help="image column: a path relative to FILE's folder, or a URL")
@click.option("--price", help="price column (number)")
@click.option("--available", help="availability column (true/false, yes/no, 1/0)")
@click.pass_obj
def items(obj, file: str, preset: str | None, fmt: str | None, rejects: str | None, attributes: str | None,  # type: ignore[no-untyped-def]
          id_col: str | None, title: str | None, text: str | None, category: str | None, image: str | None,
          price: str | None, available: str | None) -> None:
    """Upsert the items in FILE by id (CSV, JSON Lines or Parquet)."""
    config: Config = obj.config
    base: ItemMapping = _preset(config, preset, "items")
    overrides = {
        "id": id_col, "title": title, "text": _cols(text), "category": category, "image": image,
        "price": price, "available": available, "attributes": _cols(attributes),
    }
    mapping = base.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    engine = engine_from_config(config)
    require_schema(engine)
    from recsys.store.image_roots import image_policy, ingest_roots

    report = ingest_items(engine, file, mapping, fmt=fmt, reject_path=_reject_path(config, file, "items", rejects),
                          chunk_size=config.ingest.chunk_size, policy=image_policy(config, ingest_roots(config, file)))
    click.echo(report.summary())
    if report.rejected:
        sys.exit(1)


@ingest.command("events")
@_apply(_common)
@click.option("--user", help="user id column (default: user_id)")
@click.option("--item", help="item id column (default: item_id)")
@click.option("--timestamp", help="timestamp column: unix seconds or ISO 8601 (default: timestamp)")
@click.option("--type", "type_col", help="event type column; types must be in config event_types")
@click.option("--event-type", help="event type for every row when there is no --type column")
@click.option("--value", help="numeric value column (e.g. a rating)")
@click.option("--event-id", help="unique event id column (the idempotency key); default: derived from the row")
@click.pass_obj
def events(obj, file: str, preset: str | None, fmt: str | None, rejects: str | None, attributes: str | None,  # type: ignore[no-untyped-def]
           user: str | None, item: str | None, timestamp: str | None, type_col: str | None, event_type: str | None,
           value: str | None, event_id: str | None) -> None:
    """Append the events in FILE idempotently (CSV, JSON Lines or Parquet)."""
    config: Config = obj.config
    base: EventMapping = _preset(config, preset, "events")
    overrides = {
        "user": user, "item": item, "timestamp": timestamp, "event_type": type_col,
        "default_event_type": event_type, "value": value, "event_id": event_id, "attributes": _cols(attributes),
    }
    mapping = base.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    if mapping.event_type is None and mapping.default_event_type not in config.event_types:
        raise ConfigError(f"--event-type {mapping.default_event_type!r} is not a configured event type; allowed: {', '.join(sorted(config.event_types))}")
    engine = engine_from_config(config)
    require_schema(engine)
    report = ingest_events(engine, file, mapping, config.event_types, fmt=fmt,
                           reject_path=_reject_path(config, file, "events", rejects), chunk_size=config.ingest.chunk_size)
    click.echo(report.summary())
    if report.rejected:
        sys.exit(1)
