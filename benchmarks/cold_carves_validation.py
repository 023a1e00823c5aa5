"""How many item hold-out carves should the cold stage average (``cf.hybrid.cold_carves``)? Chosen
without a test split.

On a protocol's *training* part, the hybrid's settings are chosen as ``recsys train`` chooses them (CF
tuning, then :func:`recsys.recommend.selection.select_params`) once per candidate number of carves ``k``
(the cold stage then maximises the mean validation NDCG over item hold-out carves with seeds 0..k-1).
Each choice is then scored on ``--fresh`` other item hold-out carves of the same training part (seeds
100, 101, ...), which no choice saw (:func:`recsys.recommend.selection.score_on_item_carves`). A one-carve
choice fits a few hundred validation users' noise; the fresh carves say whether averaging more carves
picks settings that hold on items they were not chosen on. ``k:none`` tries ``k`` carves without the
cold path's ALS candidates (``cf.hybrid.cold_als: []``), ``k:nolearned`` without the learned content score
(``cf.hybrid.cold_bilinear: []``); flags combine (``3:none:nolearned``).

    python benchmarks/cold_carves_validation.py --items ../shared/data/hm-fashion-sample/items.csv \\
        --events ../shared/data/hm-fashion-sample/events.csv --protocol cold-items --carves 1,2,3
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", required=True)
    ap.add_argument("--events", required=True)
    ap.add_argument("--protocol", default="cold-items", choices=["temporal-20", "cold-items"])
    ap.add_argument("--carves", default="1,2,3", help="comma-separated k, k:none, k:nolearned")
    ap.add_argument("--fresh", type=int, default=5, help="fresh carves scoring each choice")
    ap.add_argument("--cache-dir", default=None, help="content feature cache (see recsys evaluate)")
    args = ap.parse_args()

    from recsys.cf.history import History
    from recsys.config import load_config
    from recsys.evaluation.data import detect_preset, load_dataset
    from recsys.evaluation.features import content_features
    from recsys.evaluation.protocols import make_split
    from recsys.recommend.components import as_blocks
    from recsys.recommend.selection import score_on_item_carves, select_params
    from recsys.recommend.tuning import tune_cf

    config = load_config()
    presets = config.ingest.presets
    preset = presets[detect_preset(args.items, args.events, presets)]
    ds = load_dataset(args.items, args.events, preset)
    feats = content_features(ds, preset, config.encoders, args.cache_dir or config.data_dir / "cache")
    blocks = (feats.text, feats.image) if feats.has_image.any() else (feats.text,)
    split = make_split(args.protocol, ds.events, ds.n_users, ds.n_items, ds.tie_rank)
    history = History.from_events(split.train.user, split.train.item, split.n_users, split.n_items)
    content = as_blocks(blocks, history.n_items)
    t0 = time.perf_counter()
    tuned = tune_cf(history, config.cf, config.train.budget_s)
    cfg = tuned.cfg
    prefit = None if tuned.prefit is None else (tuned.prefit.item_factors, tuned.prefit.item_item)
    print(json.dumps({"data": ds.name, "protocol": args.protocol, "cf": tuned.report.get("component"),
                      "tuning_s": round(time.perf_counter() - t0, 1)}), flush=True)
    seeds = [100 + j for j in range(args.fresh)]
    for variant in args.carves.split(","):
        t0 = time.perf_counter()
        k, *flags = variant.split(":")
        unknown = set(flags) - {"none", "nolearned"}
        if unknown:
            raise SystemExit(f"--carves {variant}: unknown flag(s) {sorted(unknown)}; allowed: none, nolearned")
        update = {"cold_carves": int(k), **({"cold_als": ()} if "none" in flags else {}),
                  **({"cold_bilinear": ()} if "nolearned" in flags else {})}
        cfg_k = cfg.model_copy(update={"hybrid": cfg.hybrid.model_copy(update=update)})
        params, report = select_params(history, content, cfg_k, prefit=prefit)
        fresh = score_on_item_carves(params, history, content, cfg_k, seeds)
        chosen = {a: v for a, v in asdict(params).items() if a.startswith("cold")}
        print(json.dumps({"carves": variant, "fresh_mean": round(float(np.mean(fresh)), 5),
                          "fresh": [round(x, 5) for x in fresh],
                          "validation": report.get("cold_items", {}).get("ndcg@10"),
                          "seconds": round(time.perf_counter() - t0, 1), "chosen": chosen}), flush=True)


if __name__ == "__main__":
    main()
