"""``recsys evaluate``: the offline protocols of EVALUATION.md on two CSV files."""

from __future__ import annotations

import time
from pathlib import Path

import click

PROTOCOL_CHOICES = ("temporal-20", "cold-items")


@click.command("evaluate")
@click.option("--protocol", "protocols", type=click.Choice(PROTOCOL_CHOICES), multiple=True, required=True,
              help="temporal-20 (home feed) or cold-items (new items); repeat to run both")
@click.option("--items", "items_csv", type=click.Path(exists=True, dir_okay=False), required=True,
              help="items.csv (one row per item, in the order the protocol indexes them)")
@click.option("--events", "events_csv", type=click.Path(exists=True, dir_okay=False), required=True,
              help="events.csv")
@click.option("--preset", default=None,
              help="column mapping from config.ingest.presets (default: the preset that fits the headers)")
@click.option("--content/--no-content", default=True, show_default=True,
              help="compute text + image features with the configured encoders (cached)")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="where content features are cached (default: <data_dir>/cache)")
@click.option("--yardsticks/--no-yardsticks", default=True, show_default=True,
              help="add the rows 'ALS, grid best on test' (8 ALS fits, chosen on the test split: a bar, not a "
                   "model) and 'EASE, λ on validation' to temporal protocols")
@click.option("--json", "as_json", is_flag=True, help="print the table as JSON")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="write a PNG bar chart of the table here (needs matplotlib)")
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True, help="list length")
@click.pass_obj
def evaluate(  # type: ignore[no-untyped-def]
    obj,
    protocols: tuple[str, ...],
    items_csv: str,
    events_csv: str,
    preset: str | None,
    content: bool,
    yardsticks: bool,
    cache_dir: str | None,
    as_json: bool,
    plot_path: str | None,
    k: int,
) -> None:
    """Compare popularity, ALS only, content only and the hybrid on ITEMS/EVENTS.

    One configuration (the config's `cf` section) serves every protocol and data set: the hybrid chooses
    its blend on validation splits carved from the training part only.
    """
    from recsys.errors import ConfigError
    from recsys.evaluation.data import detect_preset, has_content_columns, load_dataset
    from recsys.evaluation.models import default_models
    from recsys.evaluation.reranked import HybridRerankedModel
    from recsys.evaluation.protocols import make_split
    from recsys.evaluation.report import format_table, reports_json, write_plot
    from recsys.evaluation.runner import run_models

    config = obj.config
    presets = config.ingest.presets
    name = preset or detect_preset(items_csv, events_csv, presets)
    if name not in presets:
        raise ConfigError(f"preset must be one of {sorted(presets)}, got {name!r}")
    ds = load_dataset(items_csv, events_csv, presets[name])
    vectors, blocks = None, None
    if content and not has_content_columns(ds, presets[name]):
        content = False
        if not as_json:
            click.echo(f"{Path(items_csv).name}: no text or image column; evaluating without content (ids only)")
    if content:
        from recsys.evaluation.features import content_features

        t0 = time.perf_counter()
        cache = Path(cache_dir) if cache_dir else config.data_dir / "cache"
        feats = content_features(ds, presets[name], config.encoders, cache)
        vectors = feats.combined()
        blocks = (feats.text, feats.image) if feats.has_image.any() else (feats.text,)
        if not as_json:
            click.echo(
                f"content features: text {feats.text_version}, image {feats.image_version} "
                f"({int(feats.has_image.sum())}/{ds.n_items} images, {time.perf_counter() - t0:.1f}s incl. cache)"
            )
    reports = []
    for protocol in protocols:
        split = make_split(protocol, ds.events, ds.n_users, ds.n_items, ds.tie_rank)
        extra = None
        if yardsticks:
            from recsys.evaluation.yardsticks import yardstick_rows

            extra = lambda s, d, done: yardstick_rows(s, d, config.cf, k, done)  # noqa: E731
        models = [*default_models(config.cf, vectors is not None, config.train.budget_s), HybridRerankedModel(config.cf)]
        report = run_models(models, split, vectors, ds.name, k, blocks, extra)
        reports.append(report)
        if not as_json:
            click.echo(format_table(report))
            click.echo("")
    if as_json:
        click.echo(reports_json(reports))
    if plot_path:
        out = write_plot(reports, plot_path)
        if not as_json:
            click.echo(f"plot written to {out}")
