"""``recsys search "black stockings" --k 10``: product search from the command line."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from recsys.config import Config


@click.command("search")
@click.argument("text", required=False)
@click.option("--image", type=click.Path(dir_okay=False), help="query image (a file or URL); with TEXT: both combined")
@click.option("--k", type=click.IntRange(min=1), default=10, show_default=True, help="how many hits")
@click.option("--category", "categories", multiple=True, help="only items of this category (repeatable)")
@click.option("--include-unavailable", is_flag=True, help="also return items marked unavailable")
@click.option("--json", "as_json", is_flag=True, help="print the hits as JSON")
@click.pass_obj
def search(obj, text: str | None, image: str | None, k: int, categories: tuple[str, ...],  # type: ignore[no-untyped-def]
           include_unavailable: bool, as_json: bool) -> None:
    """Search the catalogue by TEXT, by --image, or both (exact search over the stored embeddings)."""
    from recsys.search.engine import SearchFilters
    from recsys.search.loader import build_product_search
    from recsys.store.db import engine_from_config, require_schema

    if text is None and image is None:
        raise click.UsageError("give a TEXT query, an --image, or both")
    config: Config = obj.config
    engine = engine_from_config(config)
    require_schema(engine)
    searcher = build_product_search(engine, config)
    filters = SearchFilters(categories=tuple(categories) or None, available_only=not include_unavailable)
    try:
        hits = searcher.search(text=text, image=image, k=k, filters=filters)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"space": searcher.catalogue.space, "hits": [asdict(h) for h in hits]}, indent=2))
        return
    if not hits:
        click.echo("no hits")
        return
    width = max(len(h.item_id) for h in hits)
    for rank, h in enumerate(hits, 1):
        click.echo(f"{rank:>3}  {h.item_id:<{width}}  {h.score:6.3f}  {h.title}")
