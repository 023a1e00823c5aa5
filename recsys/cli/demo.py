"""``recsys demo``: generate a small shop and run every pipeline stage on it.

This is the project's "main job" on a fresh machine: it needs no data and no network, and uses the
embedded default database (a SQLite file under the data directory) unless configured otherwise.
"""

from __future__ import annotations

import importlib.util
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from recsys.config import Config
from recsys.demo.catalogue import generate_demo
from recsys.ingest import ingest_events, ingest_items
from recsys.store import db as store_db


def _step(title: str) -> Callable[[Callable[[], str]], str]:
    def run(fn: Callable[[], str]) -> str:
        t0 = time.perf_counter()
        click.echo(f"==> {title}")
        out = fn()
        click.echo(f"    {out}  [{time.perf_counter() - t0:.1f} s]")
        return out

    return run


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@click.command("demo")
@click.option("--items", "n_items", default=300, show_default=True, help="number of generated items")
@click.option("--users", "n_users", default=200, show_default=True, help="number of generated users")
@click.option("--seed", default=0, show_default=True)
@click.pass_obj
def demo(obj, n_items: int, n_users: int, seed: int) -> None:  # type: ignore[no-untyped-def]
    """Generate a demo shop, load it and run every pipeline stage on it."""
    config: Config = obj.config
    out_dir = Path(config.data_dir) / "demo"
    engine = store_db.engine_from_config(config)
    click.echo(f"data directory: {config.data_dir}   database: {engine.url.render_as_string(hide_password=True)}")

    made = []

    def generate() -> str:
        files = generate_demo(out_dir, n_items=n_items, n_users=n_users, seed=seed)
        made.append(files)
        return f"{files.n_items} items ({files.n_images} with images), {files.n_users} users, {files.n_events} events in {files.out_dir}"

    _step("generate the demo shop")(generate)
    files = made[0]
    _step("migrate the database")(lambda: (store_db.upgrade(engine), f"schema at revision {store_db.current_revision(engine)}")[1])
    preset = config.ingest.presets["demo"]
    rejects = config.data_dir / "rejects"

    def load_items() -> str:
        rep = ingest_items(engine, files.items_csv, preset.items, reject_path=rejects / "demo-items.jsonl")
        return rep.summary()

    def load_events() -> str:
        rep = ingest_events(engine, files.events_csv, preset.events, config.event_types, reject_path=rejects / "demo-events.jsonl")
        return rep.summary()

    _step("ingest items")(load_items)
    _step("ingest events")(load_events)

    for module, title, runner in _later_stages():
        if _has(module):
            _step(title)(lambda runner=runner: runner(config, engine))
    click.echo("done.")
    for line in playground_lines(config, getattr(obj, "_config_path", None)):
        click.echo(line)


def playground_lines(config: Config, config_path: str | None) -> list[str]:
    """How to open the web playground on what the demo just built: the command and the URL."""
    prog = sys.argv[0] if Path(sys.argv[0]).name == "recsys" else "recsys"
    env = ["RECSYS_SERVICE_API_KEYS='[demo-key]'"]  # the click / buy buttons post events with this key
    if config_path is None and Path(config.data_dir) != Path(".recsys"):
        env.append(f"RECSYS_DATA_DIR={shlex.quote(str(Path(config.data_dir).resolve()))}")
    cfg = f" --config {shlex.quote(config_path)}" if config_path else ""
    host, port = config.service.host, config.service.port
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return [
        "",
        "playground: start the service with",
        f"    {' '.join(env)} {prog}{cfg} serve",
        f"then open http://{shown}:{port}/ui/   (type demo-key into 'API key' to post clicks and purchases)",
    ]


def _later_stages() -> list[tuple[str, str, Callable[[Config, object], str]]]:
    """Stages from later pipeline parts, run when their modules are installed."""
    return [
        ("recsys.embed", "embed item texts and images (offline default encoders)", _embed),
        ("recsys.align.store", "train the text-image alignment", _align),
        ("recsys.recommend.model", "train the feed model (ALS + content + popularity, blend chosen on validation)", _train),
        ("recsys.serving", "serve: similar items, a home feed, a search (in process)", _serve),
        ("recsys.export.job", "export every user's top 20 to Parquet (the service's ranking)", _export),
    ]


def _embed(config: Config, engine: object) -> str:
    from recsys.embed import run_embed
    from recsys.store.image_roots import image_policy, image_roots
    from recsys.encoders.factory import build_encoders

    text, image = build_encoders(config.encoders)
    policy = image_policy(config, image_roots(config, engine))  # type: ignore[arg-type]
    report = run_embed(engine, config.encoders, text_encoder=text, image_encoder=image,  # type: ignore[arg-type]
                       policy=policy)
    return "; ".join(report.lines()[:4])


def _align(config: Config, engine: object) -> str:
    from recsys.align.store import train_from_store

    model, path = train_from_store(engine, config, getattr(config, "align", None))  # type: ignore[arg-type]
    val = model.metrics["val"]
    figures = ", ".join(f"{d.replace('_to_', '->')} R@10 {m['R@10']:.2f}" for d, m in val.items())
    return f"alignment {model.version} ({figures} on held-out demo items)"


def _train(config: Config, engine: object) -> str:
    from recsys.recommend.model import fit_feed_model, save_feed_model

    model = fit_feed_model(engine, config)
    save_feed_model(engine, config, model)
    m, p = model.info["metrics"], model.params
    return (f"feed model {model.version}: {m['users']} users x {m['items']} items, settings + fit "
            f"{m['fit_seconds']:.2f} s (weights cf {p.warm_cf:g} / content {p.warm_content:g} / popularity {p.warm_pop:g})")


def _export(config: Config, engine: object) -> str:
    from recsys.export.job import ExportContext, ExportOptions, run_export
    from recsys.export.writers import open_sink
    from recsys.serving import Runtime

    rt = Runtime(config, engine)  # type: ignore[arg-type]
    rt.reload()
    out = config.data_dir / "exports" / "recommendations.parquet"
    res = run_export(
        ExportContext.from_runtime(rt), ExportOptions(k=20),
        lambda spec, schema: open_sink(str(out), "parquet", None, engine, spec, schema, restart=True),
        engine=engine, event_types=dict(config.event_types),
    )
    return f"{res.rows} rows for {res.ids} users in {res.seconds:.1f} s -> {res.location} (+ .manifest.json)"


def _serve(config: Config, engine: object) -> str:
    from recsys.serving import Runtime

    rt = Runtime(config, engine)  # type: ignore[arg-type]
    rt.reload()
    ready, checks = rt.readiness()
    if not ready:
        return f"not ready: {checks}"
    sim = rt.similar_items("D0001", k=3)
    feed = rt.recommend("U0001", k=3)
    hits = rt.search(text="red star mug", image=None, user_id=None, k=3)

    def fmt(items: list) -> str:  # type: ignore[type-arg]
        return ", ".join(f"{i.title!r}" for i in items)

    return (
        f"similar to D0001: {fmt(sim.items)}\n    feed for U0001: {fmt(feed.items)}\n"
        f"    search 'red star mug': {fmt(hits.items)}\n    start the API with `recsys serve` (see README)"
    )
