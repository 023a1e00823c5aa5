"""``recsys train``: the feed model (the evaluated hybrid) from the SQL events and stored item vectors."""

from __future__ import annotations

import json
from typing import Any

import click


@click.command("train")
@click.option("--model", type=click.Choice(["als", "bpr"]), default=None,
              help="override cf.model (default: the config's, ALS unless changed)")
@click.option("--version", default=None, help="artifact version (default: UTC time + model name)")
@click.option("--activate/--no-activate", default=True, show_default=True,
              help="make the new version the active one")
@click.option("--content/--no-content", default=True, show_default=True,
              help="use the stored text/image vectors (`recsys embed`) as the hybrid's content")
@click.option("--cf-only", is_flag=True,
              help="train and register only the plain CF factors (artifact kind cf), not the feed model")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.pass_obj
def train(  # type: ignore[no-untyped-def]
    obj, model: str | None, version: str | None, activate: bool, content: bool, cf_only: bool, as_json: bool
) -> None:
    """Train the home-feed model on the events table: ALS (or BPR) factors, blended with content and
    popularity by the hybrid whose settings are chosen on validation splits of the same events (the
    model `recsys evaluate` measures). The service and `recsys export` rank with the active version."""
    from recsys.store.db import engine_from_config, require_schema

    config = obj.config
    if model is not None and model != config.cf.model:
        config = config.model_copy(update={"cf": config.cf.model_copy(update={"model": model})})
    engine = engine_from_config(config)
    require_schema(engine)
    if cf_only:
        from recsys.cf.train import train_from_sql

        result = train_from_sql(engine, config, version=version, activate=activate)
        m = result.metrics
        if as_json:
            click.echo(json.dumps({"kind": "cf", "version": result.version, "path": str(result.path), "metrics": m}))
            return
        click.echo(
            f"trained {config.cf.model} ({config.cf.factors} factors) on {m['users']} users x {m['items']} items, "
            f"{m['pairs']} pairs from {m['events']} events: matrix {m['matrix_seconds']:.2f}s, fit {m['fit_seconds']:.2f}s"
        )
        click.echo(f"artifact cf/{result.version} at {result.path}{' (active)' if activate else ''}")
        return
    from dataclasses import asdict

    from recsys.recommend.model import fit_feed_model, save_feed_model

    fitted = fit_feed_model(engine, config, content=content)
    path = save_feed_model(engine, config, fitted, version=version, activate=activate)
    m = fitted.info["metrics"]
    tuning = fitted.info.get("selection", {}).get("tuning", {})
    if as_json:
        click.echo(json.dumps({"kind": "feed", "version": fitted.version, "path": str(path), "metrics": m,
                               "params": asdict(fitted.params), "encoders": fitted.encoders, "cf": {
                                   k: getattr(fitted.cfg, k) for k in ("component", "factors", "regularization",
                                                                       "alpha", "ease_lambda", "knn_k", "knn_shrink")},
                               "tuning": tuning, "cold_items": fitted.info.get("selection", {}).get("cold_items"),
                               "sasrec": fitted.info.get("selection", {}).get("sasrec")}))
        return
    c = fitted.cfg
    chosen = {"als": f"ALS {c.factors} factors, regularization {c.regularization:g}, alpha {c.alpha:g}",
              "ease": f"EASE lambda {c.ease_lambda:g}", "itemknn": f"item-kNN k {c.knn_k}, shrink {c.knn_shrink:g}"}
    if tuning.get("enabled"):
        scores = ", ".join(f"{f} {v:.4f}" for f, v in tuning.get("best_ndcg@10", {}).items())
        skipped = f"; out of budget: {', '.join(tuning['out_of_budget'])}" if tuning.get("out_of_budget") else ""
        click.echo(f"CF tuned on validation ({tuning.get('validation_users', 0)} users, {len(tuning.get('trials', []))} "
                   f"trials, {tuning.get('seconds', 0):.1f}s of a {tuning.get('budget_s', 0):.0f}s budget{skipped}): "
                   f"best NDCG@10 {scores}")
    click.echo(f"CF component: {chosen[c.component]}"
               + (f" (item factors: {chosen['als']})" if c.component != "als" else "")
               + (f"; transitions weight {fitted.params.seq_weight:g}" if fitted.params.seq_weight else ""))
    sasrec = fitted.info.get("selection", {}).get("sasrec")
    if sasrec:
        click.echo(f"SASRec: {_sasrec_line(sasrec, fitted.params.sasrec_weight)}")
    click.echo(
        f"trained the feed model ({c.component} + "
        f"{'content ' + '/'.join(fitted.encoders) if fitted.encoders else 'no content'} + popularity) on "
        f"{m['users']} users x {m['items']} items, {m['pairs']} pairs from {m['events']} events: "
        f"read {m['read_seconds']:.2f}s, settings + fit {m['fit_seconds']:.2f}s"
    )
    p = fitted.params
    click.echo(f"chosen weights: warm items cf {p.warm_cf:g} / content {p.warm_content:g} / popularity {p.warm_pop:g}; "
               f"cold items cf {p.cold_cf:g} / content {p.cold_content:g} / popularity {p.cold_pop:g} "
               f"(learned content score {p.cold_bilinear:g} inside the cold content score)")
    cold = fitted.info.get("selection", {}).get("cold_items")
    if cold:  # the cold path's factors, chosen on the cold-items validation carve
        trials = ", ".join(f"{t['factors']}/{t['regularization']:g}/{t['alpha']:g} {t['ndcg@10']:.4f}"
                           for t in cold.get("cold_als_trials", []))
        own = p.cold_als
        click.echo(f"cold items' factors: {'own ALS ' + '/'.join(f'{v:g}' for v in own) if own else 'the warm ALS ones'}"
                   f" (cold-items validation NDCG@10 per factors/regularization/alpha: {trials})")
    click.echo(f"artifact feed/{fitted.version} at {path}{' (active)' if activate else ''}")


def _sasrec_line(report: dict[str, Any], weight: float) -> str:
    """What became of the SASRec sequence model (trained or skipped, epochs, seconds, validation)."""
    if not report.get("trained"):
        return f"skipped ({report.get('skipped', 'not trained')})"
    line = (f"trained on the validation carve, {report.get('epochs')} epochs in {report.get('seconds', 0):.1f}s "
            f"(own validation NDCG@10 {report.get('best_ndcg@10', 0):.4f}); blend validation NDCG@10 "
            f"{report.get('blend_ndcg@10_with', 0):.4f} with weight {weight:g}, "
            f"{report.get('blend_ndcg@10_without', 0):.4f} without")
    final = report.get("final_fit")
    return line + (f"; final fit {final.get('epochs')} epochs in {final.get('seconds', 0):.1f}s" if final
                   else "; not used (weight 0)")
