"""``recsys train-align`` and ``recsys evaluate-search``: contrastive alignment and its cross-modal evaluation."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
import yaml
from pydantic import ValidationError

from recsys.align.settings import AlignConfig
from recsys.config import Config
from recsys.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def default_items_path() -> Path:
    """``$RECSYS_SHARED_DATA/hm-fashion-sample/items.csv``, else ``../shared/data/...`` beside the repository."""
    root = Path(os.environ.get("RECSYS_SHARED_DATA", REPO.parent / "shared" / "data"))
    return root / "hm-fashion-sample" / "items.csv"


def align_config(config: Config, overrides: tuple[str, ...] = ()) -> AlignConfig:
    """``config.align`` (or the defaults when the section is not wired in) with ``key=value`` overrides.

    Raises:
        ConfigError: an override is not ``key=value``, names an unknown key, or has a bad value.
    """
    base = getattr(config, "align", None)
    base = base if isinstance(base, AlignConfig) else AlignConfig()
    values: dict[str, Any] = base.model_dump()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes key=value, got {item!r}")
        key = key.strip()
        if key not in AlignConfig.model_fields:
            raise ConfigError(f"--set: unknown align key {key!r}; keys: {', '.join(sorted(AlignConfig.model_fields))}")
        values[key] = yaml.safe_load(raw) if raw.strip() else None
    try:
        return AlignConfig.model_validate(values)
    except ValidationError as exc:
        msgs = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'align'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid align settings: {msgs}") from None


def _progress_enabled(no_progress: bool) -> bool:
    return not no_progress and sys.stderr.isatty()


_set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="override an align setting, e.g. --set epochs=20 --set head=linear (repeatable)",
)


@click.command("train-align")
@_set_option
@click.option("--no-activate", is_flag=True, help="register the new alignment without making it the active one")
@click.option("--json", "as_json", is_flag=True, help="print the manifest's metrics as JSON")
@click.pass_obj
def train_align(obj, overrides: tuple[str, ...], no_activate: bool, as_json: bool) -> None:  # type: ignore[no-untyped-def]
    """Train projection heads aligning the stored text and image vectors (run `recsys embed` first).

    Items with both a text and an image vector from the configured encoders are the training pairs;
    the heads, their config and validation metrics are saved under <artifacts>/align/<version> and
    registered (and activated) in the database.
    """
    from recsys.align.store import train_from_store
    from recsys.store.db import engine_from_config, require_schema

    config: Config = obj.config
    cfg = align_config(config, overrides)
    engine = engine_from_config(config)
    require_schema(engine)
    model, path = train_from_store(engine, config, cfg, activate=not no_activate)
    if as_json:
        click.echo(json.dumps({"version": model.version, "path": str(path), "metrics": dict(model.metrics)}, indent=2))
        return
    val = model.metrics["val"]
    click.echo(
        f"alignment {model.version}: {model.metrics['n_train']} training pairs, {model.metrics['n_val']} held out, "
        f"{model.metrics['train_seconds']:.1f}s"
    )
    for direction, m in val.items():
        click.echo(f"  val {direction.replace('_to_', ' → ')}: R@1 {m['R@1']:.3f}  R@10 {m['R@10']:.3f}  MRR {m['MRR']:.3f}")
    click.echo(f"saved to {path}{'' if no_activate else ' (active)'}")


@click.command("evaluate-search")
@click.option("--items", "items_path", type=click.Path(dir_okay=False), default=None,
              help="H&M items.csv (default: ../shared/data/hm-fashion-sample/items.csv or $RECSYS_SHARED_DATA)")
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True,
              help="test: the protocol's 1,600 held-out items; val: 1,600 items carved from the 6,400 training "
                   "items (train on the other 4,800), for choosing settings without touching the test set")
@_set_option
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="feature cache (default <data_dir>/cache)")
@click.option("--no-cache", is_flag=True, help="encode everything again, write no cache")
@click.option("--save", "save_dir", type=click.Path(file_okay=False), default=None,
              help="also save the trained alignment to this folder")
@click.option("--baseline", is_flag=True,
              help="also train the linear recipe of EVALUATION-hm.md on the same features (one more row)")
@click.option("--json", "as_json", is_flag=True, help="print the figures as JSON")
@click.option("--no-progress", is_flag=True, help="no progress bar")
@click.pass_obj
def evaluate_search(obj, items_path: str | None, split: str, overrides: tuple[str, ...], cache_dir: str | None,  # type: ignore[no-untyped-def]
                    no_cache: bool, save_dir: str | None, baseline: bool, as_json: bool, no_progress: bool) -> None:
    """Cross-modal retrieval on hm-fashion-sample (EVALUATION-hm.md): text→image and image→text R@1, R@10, MRR.

    Rows: the unaligned encoders, and an alignment trained on the training items with the align
    settings (config `align`, --set overrides). Encoder features are cached by encoder version.
    """
    from recsys.evaluation.hm_search import hm_protocol

    config: Config = obj.config
    cfg = align_config(config, overrides)
    path = Path(items_path) if items_path else default_items_path()
    cache = None if no_cache else Path(cache_dir) if cache_dir else config.data_dir / "cache"
    result = hm_protocol(path, config.encoders, cfg, split=split, cache_dir=cache,
                         progress=_progress_enabled(no_progress), baseline=baseline)
    if save_dir and result.model is not None:
        result.model.save(save_dir)
    if as_json:
        out = result.to_json() | {"split": split, "items": str(path), "align": cfg.model_dump(mode="json")}
        if result.model is not None:
            out["alignment"] = {"version": result.model.version, "train": dict(result.model.metrics)}
            out["alignment"]["train"].pop("members", None)
        click.echo(json.dumps(out, indent=2))
        return
    from recsys.evaluation.crossmodal import format_table

    what = "protocol test set" if split == "test" else "validation split of the training items"
    click.echo(f"hm-fashion-sample cross-modal retrieval, {what}: {result.n_test} test items, "
               f"{result.n_train} training items")
    click.echo(format_table(result.rows))
    for note in result.notes:
        click.echo(f"note: {note}")
    if result.model is not None:
        m = result.model.metrics
        click.echo(f"alignment {result.model.version}: trained in {m['train_seconds']:.1f}s on {m['n_train']} pairs "
                   f"({m['n_val']} held out for early stopping; best epochs "
                   f"{[r['best_epoch'] for r in m['members']]})")
