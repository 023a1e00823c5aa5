"""Is BPR worth a place among the tuned CF families? ALS against BPR over its learning rate, on validation.

On a data set's temporal-20 *training* part, the validation carve the CF tuning uses (each user's newest
20 % of training items, :func:`recsys.cf.validation.temporal_holdout`; never the test split), every
candidate is fitted and scored alone exactly as :mod:`recsys.recommend.tuning` scores a trial (users
folded in against the item factors, validation NDCG@10). ALS runs over the tuning's own grid; BPR
(implicit, one thread) over ``--lr`` x ``--bpr-reg`` at ``--bpr-factors`` factors and ``--bpr-iterations``.

    python benchmarks/bpr_validation.py --items ../shared/data/movielens-100k-posters/items.csv \
        --events ../shared/data/movielens-100k-posters/events.csv
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", required=True)
    ap.add_argument("--events", required=True)
    ap.add_argument("--lr", default="0.005,0.01,0.05,0.1")
    ap.add_argument("--bpr-reg", default="0.01")
    ap.add_argument("--bpr-factors", type=int, default=64)
    ap.add_argument("--bpr-iterations", type=int, default=100)
    args = ap.parse_args()

    from recsys.cf.history import History
    from recsys.cf.settings import CFConfig
    from recsys.cf.validation import temporal_holdout
    from recsys.config import load_config
    from recsys.evaluation.data import detect_preset, load_dataset
    from recsys.evaluation.protocols import make_split
    from recsys.recommend.tuning import _Scorer

    config = load_config(None)
    presets = config.ingest.presets
    ds = load_dataset(args.items, args.events, presets[detect_preset(args.items, args.events, presets)])
    split = make_split("temporal-20", ds.events, ds.n_users, ds.n_items, ds.tie_rank)
    history = History.from_events(split.train.user, split.train.item, split.n_users, split.n_items)
    cfg: CFConfig = config.cf
    t = cfg.tuning
    carve = temporal_holdout(history, cfg.hybrid.validation_fraction, t.max_validation_users, cfg.seed)
    scorer = _Scorer(carve)
    rows = []
    for f, r, a in itertools.product(t.als_factors, t.als_regularization, t.als_alpha):
        c = cfg.model_copy(update={"model": "als", "factors": f, "regularization": r, "alpha": a})
        t0 = time.process_time()
        rows.append({"model": "als", "factors": f, "regularization": r, "alpha": a, "ndcg@10": scorer("als", c),
                     "cpu_s": round(time.process_time() - t0, 1)})
    for lr, reg in itertools.product([float(x) for x in args.lr.split(",")], [float(x) for x in args.bpr_reg.split(",")]):
        c = cfg.model_copy(update={"model": "bpr", "factors": args.bpr_factors, "regularization": reg,
                                   "learning_rate": lr, "iterations": args.bpr_iterations, "confidence": "none"})
        t0 = time.process_time()
        rows.append({"model": "bpr", "factors": args.bpr_factors, "regularization": reg, "learning_rate": lr,
                     "ndcg@10": _Scorer(carve)("als", c),  # a fresh scorer: its cache keys ignore the rate
                     "cpu_s": round(time.process_time() - t0, 1)})
    for row in rows:
        row["ndcg@10"] = round(float(row["ndcg@10"]), 5)
        print(json.dumps(row))
    best = {m: max((r for r in rows if r["model"] == m), key=lambda r: r["ndcg@10"]) for m in ("als", "bpr")}
    print(json.dumps({"data": ds.name, "validation_users": int(carve.users.shape[0]), "best": best,
                      "load": os.getloadavg()}))


if __name__ == "__main__":
    main()
