"""``recsys export``: recommendations for all users, or similar items for all items, to files or SQL."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("export")
@click.argument("what", type=click.Choice(["recommendations", "similar"]))
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="output file (written under a temporary name, renamed when complete)")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv", "jsonl"]), default=None,
              help="file format (default: from the file name's suffix, else parquet)")
@click.option("--table", default=None, help="write to this SQL table instead of a file (replaced at the end)")
@click.option("--ids", "ids_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="a file with one user id (or item id) per line; default: every user with events (every item)")
@click.option("-k", "k", type=click.IntRange(1, 10_000), default=10, show_default=True, help="rows per user / item")
@click.option("--exclude-seen/--include-seen", default=True, show_default=True,
              help="leave out items the user already interacted with (recommendations)")
@click.option("--category", default=None, help="only items of this category")
@click.option("--diversity", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="MMR trade-off, as the API's diversity parameter")
@click.option("--max-per-category", type=click.IntRange(1), default=None, help="per-category cap, as the API's")
@click.option("--include-unavailable", is_flag=True, help="similar items: also list unavailable items")
@click.option("--chunk-size", type=click.IntRange(1), default=2048, show_default=True,
              help="users (items) per chunk: the unit of memory, progress and resume")
@click.option("--engine", "engine_name", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process; ray: Ray Data actors (pip install 'recsys[ray]')")
@click.option("--ray-address", default=None, help="Ray cluster address (default: config ray.address; none: a local Ray)")
@click.option("--restart", is_flag=True, help="discard the chunks of an interrupted run instead of resuming it")
@click.option("--no-progress", is_flag=True, help="no progress bar")
@click.pass_obj
def export(  # type: ignore[no-untyped-def]
    obj, what: str, out: str | None, fmt: str | None, table: str | None, ids_file: str | None, k: int,
    exclude_seen: bool, category: str | None, diversity: float, max_per_category: int | None,
    include_unavailable: bool, chunk_size: int, engine_name: str, ray_address: str | None, restart: bool,
    no_progress: bool,
) -> None:
    """Export WHAT (recommendations | similar) with the service's ranking and filters.

    An interrupted run resumes from its last complete chunk when started again with the same options.
    A manifest (<out>.manifest.json) records the model and index versions; the export is also listed in
    the artifacts registry (kind export).
    """
    from recsys.export.job import ExportContext, ExportOptions, run_export
    from recsys.export.writers import open_sink
    from recsys.serving import Runtime
    from recsys.store.db import require_schema

    config = obj.config
    if fmt is None and out is not None:
        suffix = Path(out).suffix.lower().lstrip(".")
        fmt = {"parquet": "parquet", "pq": "parquet", "csv": "csv", "jsonl": "jsonl", "ndjson": "jsonl"}.get(suffix, "parquet")
    opts = ExportOptions(what=what, k=k, exclude_seen=exclude_seen, category=category, diversity=diversity,  # type: ignore[arg-type]
                         max_per_category=max_per_category, available_only=not include_unavailable,
                         chunk_size=chunk_size)
    ids = None
    if ids_file:
        ids = [line.strip() for line in Path(ids_file).read_text(encoding="utf-8").splitlines() if line.strip()]
    rt = Runtime.from_config(config)
    require_schema(rt.engine)
    ready, checks = rt.readiness()
    if not ready:
        raise click.ClickException(f"cannot load the serving state: {checks}")
    ctx = ExportContext.from_runtime(rt)
    runner = None
    if engine_name == "ray":
        from recsys.export.ray_export import ray_chunk_runner

        runner = ray_chunk_runner(config, ray_address)
    result = run_export(
        ctx, opts, lambda spec, schema: open_sink(out, fmt or "parquet", table, rt.engine, spec, schema, restart=restart),
        engine=rt.engine, event_types=dict(config.event_types), ids=ids,
        progress=not no_progress and sys.stderr.isatty(), rank_chunks=runner, engine_name=engine_name,
    )
    per_s = result.ids / result.seconds if result.seconds > 0 else float("inf")
    click.echo(
        f"exported {what} for {result.ids} {'users' if what == 'recommendations' else 'items'} to {result.location} "
        f"({result.rows} rows this run, {result.resumed_chunks} chunks resumed, {result.seconds:.1f}s, {per_s:,.0f}/s)"
    )
    click.echo(f"versions: {result.manifest['versions']}; registry: export/{result.version}")
