"""Benchmark: CPU cost of ``recsys train-align`` (alignment training), per 10,000 items.

Synthetic paired vectors with a learnable relation (a shared 64-d latent seen through a linear map plus noise
on the text side and a non-linear map plus noise on the image side, each row L2-normalised), with the dims of
the configured encoders (text 384 for MiniLM; image 1,280 for EfficientNet-Lite0, or ``--image-dim``), are
aligned with :func:`recsys.align.train.train_alignment` exactly as ``recsys train-align`` does (a
``val_fraction`` share held out for early stopping). Printed as one markdown table:

- the current defaults (``config.yaml``'s ``align`` section) at each ``--items`` size: CPU seconds of the
  whole training (``time.process_time``: every thread of the process), wall seconds, CPU seconds per 10k
  items, epochs run / best epoch, and the early-stopping split's text→image R@10 (a sanity check that it
  learnt: chance is 10 / n_val);
- the previous defaults (3-member MLP-1024 ensemble, at most 60 epochs, patience 20) at ``--baseline-items``
  items, run for ``--baseline-epochs`` epochs only (a full run costs about half an hour of CPU per 10k
  items), reported as CPU seconds per epoch per 10k items beside the same figure of the current defaults
  (measured in the same run).

``--epochs-at SIZE:EPOCHS`` (repeatable) caps the schedule at that size (the row says "first N epochs"; its
CPU seconds per 10k items are then not those of a full training, compare the per-epoch column): on a busy
2-core machine a full training of 100,000 items takes hours of wall time.

``--hm`` adds the H&M rows (``hm-fashion-sample``, 8,000 items; encoder vectors computed once with the
configured encoders and cached under ``--hm-cache``): the CPU seconds of training on all 8,000 items (what
``recsys train-align`` does) and on the protocol's 6,400 training items, and the protocol's held-out 1,600
text→image R@10, for the current defaults and, with ``--hm-previous``, the previous ones (on the same
thread count as the current defaults; several CPU-minutes).

Run: ``python benchmarks/bench_align.py [--items 10000,100000] [--epochs-at 100000:3] [--threads N] [--hm
[--hm-previous]] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recsys.align.settings import AlignConfig
from recsys.align.train import train_alignment
from recsys.config import load_config

TEXT_DIM = 384
PREVIOUS_DEFAULTS: dict[str, Any] = {
    "head": "mlp", "hidden_dim": 1024, "dim": 256, "dropout": 0.4, "epochs": 60, "batch_size": 512, "lr": 2e-3,
    "weight_decay": 0.05, "warmup_epochs": 2, "patience": 20, "ensemble": 3, "threads": 2, "precision": "float32",
}
"""The ``align`` defaults before issue 14 (the other keys were unchanged)."""


def image_dim_of(name: str) -> int | None:
    """Feature dimension of a known image encoder name without loading its weights (``None``: unknown)."""
    from recsys.encoders.efficientnet_lite import EfficientNetLite
    from recsys.encoders.image import EFFICIENTNET_LITE0

    return EfficientNetLite.feature_dim if name == EFFICIENTNET_LITE0 else None


def synthetic_pairs(n: int, image_dim: int, seed: int = 0, latent: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``(n, 384)`` text and ``(n, image_dim)`` image float32 unit vectors driven by one shared latent."""
    maps = np.random.default_rng(1000 + seed)
    a = maps.normal(size=(latent, TEXT_DIM)).astype(np.float32) / np.sqrt(latent)
    b = maps.normal(size=(latent, image_dim)).astype(np.float32) / np.sqrt(latent)
    rng = np.random.default_rng(seed)
    text = np.empty((n, TEXT_DIM), np.float32)
    image = np.empty((n, image_dim), np.float32)
    for s in range(0, n, 20_000):
        z = rng.normal(size=(min(20_000, n - s), latent)).astype(np.float32)
        t = z @ a + 2.0 * rng.normal(size=(len(z), TEXT_DIM)).astype(np.float32)
        i = np.maximum(z @ b, 0) + 2.0 * rng.normal(size=(len(z), image_dim)).astype(np.float32)
        text[s : s + len(z)] = t / np.linalg.norm(t, axis=1, keepdims=True)
        image[s : s + len(z)] = i / np.linalg.norm(i, axis=1, keepdims=True)
    return text, image


def measure(text: np.ndarray, image: np.ndarray, cfg: AlignConfig) -> dict[str, Any]:
    """Train once; CPU and wall seconds, epochs and the early-stopping split's text→image R@10."""
    load = os.getloadavg()[0]
    c0, w0 = time.process_time(), time.perf_counter()
    model = train_alignment(text, image, cfg)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    m = model.metrics
    epochs = sum(m["epochs_run"])
    return {
        "items": len(text), "cpu_s": cpu, "wall_s": wall, "cpu_s_per_10k": cpu * 10_000 / len(text),
        "epochs_run": m["epochs_run"], "best_epochs": m["best_epochs"],
        "cpu_s_per_epoch_per_10k": cpu * 10_000 / len(text) / epochs,
        "val_r10": m["val"]["text_to_image"]["R@10"], "n_val": m["n_val"], "load_before": load,
        "load_after": os.getloadavg()[0],
    }


def hm_rows(config: Any, cfg: AlignConfig, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Train on H&M's 8,000 items and on the protocol's 6,400, measure the held-out 1,600."""
    from recsys.cli.align import default_items_path
    from recsys.evaluation.crossmodal import crossmodal_metrics, protocol_split
    from recsys.evaluation.hm_search import hm_features

    cache = args.hm_cache or config.data_dir / "cache"
    text, image, _, _ = hm_features(default_items_path(), config.encoders, cache)
    split = protocol_split(len(text))
    configs = [("current defaults", cfg)]
    if args.hm_previous:
        old = AlignConfig.model_validate(cfg.model_dump() | PREVIOUS_DEFAULTS | {"threads": cfg.threads})
        configs.append((f"previous defaults on {cfg.threads} thread(s)", old))
    rows = []
    for label, c in configs:
        load = os.getloadavg()[0]
        c0 = time.process_time()
        train_alignment(text, image, c)
        c1 = time.process_time()
        model = train_alignment(text[split.train], image[split.train], c)
        c2 = time.process_time()
        m = crossmodal_metrics(model.project_text(text[split.test]), model.project_image(image[split.test]))
        rows.append({"config": label, "cpu_s_all": c1 - c0, "cpu_s_protocol": c2 - c1,
                     "r10": m["text_to_image"]["R@10"], "mrr": m["text_to_image"]["MRR"],
                     "load_before": load, "load_after": os.getloadavg()[0]})
        print(rows[-1], file=sys.stderr)
    return rows


def _row(label: str, r: dict[str, Any]) -> str:
    return (f"| {label} | {r['items']:,} | {r['cpu_s']:.1f} | {r['wall_s']:.1f} | {r['cpu_s_per_10k']:.1f} | "
            f"{r['cpu_s_per_epoch_per_10k']:.2f} | {r['epochs_run']} / {r['best_epochs']} | "
            f"{r['val_r10']:.3f} (of {r['n_val']:,}) | {r['load_before']:.1f} → {r['load_after']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", default="10000,100000", help="comma-separated catalogue sizes (default 10k, 100k)")
    parser.add_argument("--baseline-items", type=int, default=10_000, help="size for the previous defaults (0: skip)")
    parser.add_argument("--baseline-epochs", type=int, default=2, help="epochs of the previous defaults to time")
    parser.add_argument("--epochs-at", action="append", default=[], metavar="SIZE:EPOCHS",
                        help="cap the epochs of the current defaults at this catalogue size (repeatable)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: config align.threads)")
    parser.add_argument("--image-dim", type=int, default=None, help="image vector dim (default: the configured encoder's)")
    parser.add_argument("--hm", action="store_true", help="also measure on the H&M items (see the docstring)")
    parser.add_argument("--hm-previous", action="store_true", help="with --hm: the previous defaults too")
    parser.add_argument("--hm-cache", type=Path, default=None, help="encoder-vector cache (default <data_dir>/cache)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the figures as JSON here")
    args = parser.parse_args()

    config = load_config()
    cfg = config.align
    if args.threads is not None:
        cfg = cfg.model_copy(update={"threads": args.threads})
    image_dim = args.image_dim or image_dim_of(config.encoders.image.name)
    if image_dim is None:
        parser.error(f"unknown dimension of image encoder {config.encoders.image.name!r}: pass --image-dim")
    sizes = [int(s) for s in args.items.split(",") if s.strip()]
    caps = {int(k): int(v) for k, _, v in (c.partition(":") for c in args.epochs_at)}
    print(f"load average before: {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores; "
          f"threads {cfg.threads}; text {TEXT_DIM}-d, image {image_dim}-d", file=sys.stderr)

    rows: list[tuple[str, dict[str, Any]]] = []
    for n in sizes:
        text, image = synthetic_pairs(n, image_dim)
        capped = n in caps and caps[n] < cfg.epochs
        run_cfg = cfg.model_copy(update={"epochs": caps[n]}) if capped else cfg
        label = f"current defaults, first {caps[n]} of {cfg.epochs} epochs only" if capped else "current defaults"
        rows.append((label, measure(text, image, run_cfg)))
        print(_row(*rows[-1]), file=sys.stderr)
        del text, image
    if args.baseline_items:
        old = AlignConfig.model_validate(cfg.model_dump() | PREVIOUS_DEFAULTS | {"epochs": args.baseline_epochs})
        text, image = synthetic_pairs(args.baseline_items, image_dim)
        rows.append((f"previous defaults (3 members, 2 threads, float32), first {args.baseline_epochs} epoch(s) only", measure(text, image, old)))

    print(f"\nalign training on synthetic pairs ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; torch threads {cfg.threads}; load average at end "
          f"{os.getloadavg()[0]:.1f})\n")
    print("| config | items | CPU s | wall s | CPU s per 10k items | CPU s per member-epoch per 10k | epochs run / best "
          "(per member) | early-stopping split t→i R@10 | load before → after |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, r in rows:
        print(_row(label, r))
    hm = hm_rows(config, cfg, args) if args.hm else None
    if hm:
        print("\nH&M (hm-fashion-sample, 8,000 items; protocol of EVALUATION-hm.md)\n")
        print("| config | CPU s, all 8,000 items | CPU s, 6,400 training items | held-out 1,600 t→i R@10 / MRR | "
              "load before → after |")
        print("| --- | --- | --- | --- | --- |")
        for r in hm:
            print(f"| {r['config']} | {r['cpu_s_all']:.1f} | {r['cpu_s_protocol']:.1f} | {r['r10']:.3f} / "
                  f"{r['mrr']:.3f} | {r['load_before']:.1f} → {r['load_after']:.1f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": [{"config": c} | r for c, r in rows], "hm": hm,
                                         "load_average": list(os.getloadavg()), "cpus": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    main()
