"""Compare ``align`` settings on the H&M validation split only: val text→image R@10 against training CPU.

The split is the one of ``recsys evaluate-search --split val``: the protocol's 6,400 training items
(EVALUATION-hm.md) are cut into 4,800 that train and 1,600 that are measured; the protocol's 1,600 test
items are never read, so settings may be chosen on these figures. Each candidate is the ``align`` section of
``config.yaml`` with ``--candidate`` overrides; the first row is always the defaults before this comparison
(:data:`BEFORE`), measured in the same session so that CPU ratios are taken under the same machine load.
CPU seconds are ``time.process_time()`` around :func:`recsys.align.train.train_alignment` (every thread of
the process); they inflate on a busy machine, so compare rows of one run.

Run: ``python benchmarks/align_candidates.py --cache /work/cache/align --candidate
'1 member, EMA=ensemble=1,ema_decay=0.98' [--candidate ...] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recsys.align.settings import AlignConfig
from recsys.align.train import train_alignment
from recsys.config import load_config

BEFORE: dict[str, Any] = {
    "head": "mlp", "hidden_dim": 1024, "dim": 256, "epochs": 60, "batch_size": 512, "lr": 2e-3, "patience": 10,
    "ensemble": 2, "threads": 1, "precision": "auto", "ema_decay": 0.0, "image_pca_dim": 0,
}
"""The ``align`` defaults of issue 14 before this comparison (2 × MLP-1024, 60 epochs, patience 10)."""


def parse_candidate(text: str) -> tuple[str, dict[str, Any]]:
    """``"label=key=value,key=value"`` → ``(label, {key: value})`` (values parsed as JSON where they can be)."""
    label, sep, rest = text.partition("=")
    if not sep or not rest:
        raise argparse.ArgumentTypeError(f"--candidate takes LABEL=key=value[,key=value...], got {text!r}")
    overrides: dict[str, Any] = {}
    for item in rest.split(","):
        key, eq, value = item.partition("=")
        if not eq or key.strip() not in AlignConfig.model_fields:
            raise argparse.ArgumentTypeError(
                f"--candidate: {item!r} is not key=value with a key among {sorted(AlignConfig.model_fields)}"
            )
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value.strip()
    return label.strip(), overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=None, help="encoder-vector cache (default <data_dir>/cache)")
    parser.add_argument("--candidate", action="append", type=parse_candidate, default=[],
                        metavar="LABEL=key=value,...", help="a setting to compare (repeatable)")
    parser.add_argument("--features", type=Path, default=None,
                        help="an .npz with 'text' and 'image' arrays of the items in items.csv order (e.g. the "
                             "content-feature cache of `recsys evaluate`), instead of the encoders + --cache")
    parser.add_argument("--no-before", action="store_true", help="skip the row of the defaults before (BEFORE)")
    parser.add_argument("--json", type=Path, default=None, help="append each row as a JSON line to this file")
    args = parser.parse_args()

    from recsys.cli.align import default_items_path
    from recsys.evaluation.crossmodal import crossmodal_metrics, protocol_split, validation_split
    from recsys.evaluation.hm_search import hm_features

    config = load_config()
    if args.features is not None:
        import numpy as np

        with np.load(args.features) as z:
            text, image = z["text"], z["image"]
    else:
        text, image, _, _ = hm_features(default_items_path(), config.encoders, args.cache or config.data_dir / "cache")
    if len(text) != 8000:
        parser.error(f"expected the 8,000 H&M items, got {len(text)}")
    parts = validation_split(protocol_split(len(text)).train, 1600)
    candidates = ([] if args.no_before else [("defaults before (issue 14)", BEFORE)]) + args.candidate
    print("| candidate | val t→i R@10 / MRR | val i→t R@10 | CPU s (4,800 items) | member-epochs run / best | "
          "load before → after |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label, overrides in candidates:
        cfg = AlignConfig.model_validate(config.align.model_dump() | overrides)
        load = os.getloadavg()[0]
        c0 = time.process_time()
        model = train_alignment(text[parts.train], image[parts.train], cfg)
        cpu = time.process_time() - c0
        m = crossmodal_metrics(model.project_text(text[parts.test]), model.project_image(image[parts.test]))
        row = {"candidate": label, "overrides": overrides, "r10": m["text_to_image"]["R@10"],
               "mrr": m["text_to_image"]["MRR"], "i2t_r10": m["image_to_text"]["R@10"], "cpu_s": cpu,
               "epochs_run": model.metrics["epochs_run"], "best_epochs": model.metrics["best_epochs"],
               "load_before": load, "load_after": os.getloadavg()[0]}
        print(f"| {label} | {row['r10']:.4f} / {row['mrr']:.3f} | {row['i2t_r10']:.4f} | {cpu:.1f} | "
              f"{sum(row['epochs_run'])} {row['epochs_run']} / {row['best_epochs']} | "
              f"{load:.1f} → {row['load_after']:.1f} |", flush=True)
        if args.json:
            with args.json.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
