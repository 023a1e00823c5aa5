"""``recsys search "black stockings" --k 10``: product search from the command line.

Ranks with :func:`recsys.search.hybrid.run_search`, the code ``POST /v1/search`` runs (without a user).
"""

from __future__ import annotations

import json

import click

from recsys.config import Config


def _attribute_filters(pairs: tuple[str, ...]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise click.BadParameter(f"expected COLUMN=VALUE, got {pair!r}", param_hint="--attr")
        out.setdefault(name.strip(), []).append(value.strip())
    return out


@click.command("search")
@click.argument("text", required=False)
@click.option("--image", type=click.Path(dir_okay=False), help="query image (a file or URL); with TEXT: both combined")
@click.option("--k", type=click.IntRange(min=1), default=10, show_default=True, help="how many hits")
@click.option("--mode", type=click.Choice(["hybrid", "lexical", "semantic"]), default=None,
              help="retrieval (default: search.mode, hybrid)")
@click.option("--category", "categories", multiple=True, help="only items of this category (repeatable)")
@click.option("--attr", "attrs", multiple=True, metavar="COLUMN=VALUE",
              help="only items with this attribute value (repeatable; values of one column are alternatives)")
@click.option("--price-min", type=float, default=None)
@click.option("--price-max", type=float, default=None)
@click.option("--facet", "facets", multiple=True, help="count matches per value of this ('category', an attribute, 'price')")
@click.option("--include-unavailable", is_flag=True, help="also return items marked unavailable")
@click.option("--json", "as_json", is_flag=True, help="print the hits as JSON")
@click.pass_obj
def search(obj, text: str | None, image: str | None, k: int, mode: str | None, categories: tuple[str, ...],  # type: ignore[no-untyped-def]
           attrs: tuple[str, ...], price_min: float | None, price_max: float | None, facets: tuple[str, ...],
           include_unavailable: bool, as_json: bool) -> None:
    """Search the catalogue by TEXT, by --image, or both: lexical + semantic hybrid by default."""
    from recsys.search.hybrid import SearchRequest, run_search
    from recsys.search.loader import build_product_search
    from recsys.store.db import engine_from_config, require_schema

    if text is None and image is None:
        raise click.UsageError("give a TEXT query, an --image, or both")
    config: Config = obj.config
    engine = engine_from_config(config)
    require_schema(engine)
    searcher = build_product_search(engine, config)
    request = SearchRequest(text, image, k, mode, tuple(categories) or None, _attribute_filters(attrs), price_min,
                            price_max, not include_unavailable, (), tuple(facets))
    try:
        res = run_search(searcher, request, config.search)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    cat = searcher.catalogue
    hits = [{"item_id": cat.ids[r], "title": cat.titles[r], "category": cat.categories[r], "score": float(s)}
            for r, s in zip(res.rows, res.scores)]
    corrected = res.parsed.corrected if res.parsed is not None and res.parsed.corrections else None
    if as_json:
        click.echo(json.dumps({"space": cat.space, "mode": res.mode, "corrected": corrected, "hits": hits,
                               "facets": res.facets}, indent=2))
        return
    if corrected:
        click.echo(f"showing results for: {corrected}")
    if not hits:
        click.echo("no hits")
    else:
        width = max(len(h["item_id"]) for h in hits)
        for rank, h in enumerate(hits, 1):
            click.echo(f"{rank:>3}  {h['item_id']:<{width}}  {h['score']:6.3f}  {h['title']}")
    for name, counts in res.facets.items():
        click.echo(f"{name}: " + ", ".join(f"{v} ({c})" for v, c in counts.items()))
