"""``recsys evaluate-search``: the cross-modal protocol (no query options), or a search query set.

``--queries FILE`` evaluates a query set (format: :mod:`recsys.evaluation.query_sets`) on the catalogue in
the store, ranking with the served code, and prints NDCG@10 / P@10 / MRR@10 per query type for the
project's default and its peers (lexical alone, dense alone, RRF of the two) in one run.
``--generate attributes --items ITEMS.csv --columns a,b,c`` builds attribute, typo and known-item queries
from the items file (``--split test`` or ``val``: disjoint parts; ``--out`` writes them) and evaluates them.
``--tune`` searches the fusion weights and the attribute boost on the given queries (use validation
queries) and prints the best setting. Without ``--queries`` / ``--generate`` the command runs the
cross-modal protocol of EVALUATION-hm.md as before (:func:`recsys.cli.align.evaluate_search`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from recsys.cli.align import evaluate_search as crossmodal_command

_OWN = ("queries", "generate", "columns", "id_column", "title_column", "seed", "per_type", "known_items", "out",
        "search_overrides", "tune")


def _search_config(config: Any, overrides: tuple[str, ...]) -> Any:
    import yaml

    from recsys.errors import ConfigError
    from recsys.search.settings import SearchConfig

    values = config.search.model_dump()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or key.strip() not in SearchConfig.model_fields:
            raise ConfigError(f"--search-set takes KEY=VALUE with a key of {sorted(SearchConfig.model_fields)}, got {item!r}")
        values[key.strip()] = yaml.safe_load(raw)
    return SearchConfig.model_validate(values)


def _query_set(kw: dict[str, Any]) -> list[Any]:
    from recsys.cli.align import default_items_path
    from recsys.evaluation.query_sets import generate_queries, load_queries

    if kw["queries"]:
        return load_queries(kw["queries"])
    columns = [c.strip() for c in (kw["columns"] or "").split(",") if c.strip()]
    if not columns:
        raise click.UsageError("--generate attributes needs --columns, e.g. colour_group_name,product_type_name,index_group_name")
    items = Path(kw["items_path"]) if kw["items_path"] else default_items_path()
    queries = generate_queries(items, columns, id_column=kw["id_column"], title_column=kw["title_column"] or None,
                               split="validation" if kw["split"] == "val" else "test", seed=kw["seed"],
                               per_type=kw["per_type"], known_items=kw["known_items"])
    if kw["out"]:
        Path(kw["out"]).write_text("".join(q.to_json() + "\n" for q in queries), encoding="utf-8")
    return queries


def _run_query_set(obj: Any, kw: dict[str, Any]) -> None:
    from recsys.evaluation.search_eval import (
        evaluate_queries,
        format_table,
        to_json,
        tune,
    )
    from recsys.search.loader import build_product_search
    from recsys.store.db import engine_from_config, require_schema

    config = obj.config
    cfg = _search_config(config, kw["search_overrides"])
    queries = _query_set(kw)
    engine = engine_from_config(config)
    require_schema(engine)
    search = build_product_search(engine, config)
    cache = None if kw["no_cache"] else Path(kw["cache_dir"]) if kw["cache_dir"] else config.data_dir / "cache"
    if kw["tune"]:
        best, table = tune(search, queries, cfg, cache_dir=cache)
        if kw["as_json"]:
            click.echo(json.dumps({"best": best, "grid": table}, indent=2))
        else:
            for row in table:
                click.echo(json.dumps(row))
            click.echo(f"best on these queries: {best}")
        return
    ev = evaluate_queries(search, queries, cfg, cache_dir=cache)
    if kw["as_json"]:
        click.echo(json.dumps(to_json(ev) | {"queries": len(queries), "space": search.catalogue.space}, indent=2))
        return
    click.echo(f"{len(queries)} queries ({ev.skipped} skipped: no relevant item in the catalogue), catalogue "
               f"{len(search.catalogue)} items, dense space {search.catalogue.space}, {ev.seconds:.1f}s")
    click.echo(format_table(ev))


def _callback(**kw: Any) -> None:
    ctx = click.get_current_context()
    if kw["queries"] or kw["generate"]:
        if kw["queries"] and kw["generate"]:
            raise click.UsageError("give --queries FILE or --generate attributes, not both")
        _run_query_set(ctx.obj, kw)
        return
    ctx.invoke(crossmodal_command, **{k: v for k, v in kw.items() if k not in _OWN})


evaluate_search = click.Command(
    "evaluate-search",
    callback=_callback,
    help=(crossmodal_command.help or "") + "\n\nWith --queries FILE or --generate attributes: search ranking quality "
    "(NDCG@10, P@10, MRR@10 per query type) of the default, lexical, dense and RRF systems on the store's catalogue.",
    params=[
        *crossmodal_command.params,
        click.Option(["--queries"], type=click.Path(exists=True, dir_okay=False), default=None,
                     help='query set, JSON Lines: {"query": ..., "relevant": {"ITEM_ID": GRADE}, "type": ...}'),
        click.Option(["--generate"], type=click.Choice(["attributes"]), default=None,
                     help="generate attribute, typo and known-item queries from --items and --columns"),
        click.Option(["--columns"], default=None, help="with --generate: comma-separated columns (2nd = anchor)"),
        click.Option(["--id-column"], default="article_id", show_default=True, help="with --generate: the item id column"),
        click.Option(["--title-column"], default="prod_name", show_default=True,
                     help="with --generate: the title column of known-item queries ('' for none)"),
        click.Option(["--seed"], type=int, default=0, show_default=True, help="with --generate"),
        click.Option(["--per-type"], type=click.IntRange(min=1), default=100, show_default=True,
                     help="with --generate: attribute queries per type"),
        click.Option(["--known-items"], type=click.IntRange(min=0), default=100, show_default=True,
                     help="with --generate: known-item queries"),
        click.Option(["--out"], type=click.Path(dir_okay=False), default=None, help="with --generate: write the queries here"),
        click.Option(["--search-set", "search_overrides"], multiple=True, metavar="KEY=VALUE",
                     help="override a search setting for this run, e.g. --search-set attribute_weight=2"),
        click.Option(["--tune"], is_flag=True,
                     help="grid-search fusion weights and the attribute boost on these queries (validation queries!)"),
    ],
)
