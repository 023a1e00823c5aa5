"""Embedding job throughput vs the bare model's forward pass, on the H&M sample.

Loads ``hm-fashion-sample/items.csv`` (8,000 items with photos) into a temporary SQLite database, runs
the embedding job (``recsys.embed.run_embed``, the code behind ``recsys embed``), and times the bare
encoder on exactly the same batches (inputs prepared outside the timer) in the same process, right
before and right after the job, and prints a markdown table. Target: job >= 0.8x the bare model on
the image side (decoding in worker processes must not be the bottleneck).

    python benchmarks/bench_embed.py                 # all 8,000 items
    python benchmarks/bench_embed.py --limit 1000 --space image --workers 2
    python benchmarks/bench_embed.py --limit 200 --json out.json   # also write the figures as JSON
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, insert, select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recsys.embed import IMAGE, TEXT, run_embed  # noqa: E402
from recsys.embed.job import PAGE_SIZE, text_batches  # noqa: E402
from recsys.embed.store import PendingItem  # noqa: E402
from recsys.encoders.factory import build_image_encoder, build_text_encoder  # noqa: E402
from recsys.encoders.images import load_image  # noqa: E402
from recsys.encoders.settings import EncodersConfig  # noqa: E402
from recsys.store.db import make_engine, upgrade  # noqa: E402
from recsys.store.models import Item  # noqa: E402

HM_TEXT = ("product_type_name", "colour_group_name", "section_name", "detail_desc")


def shared_data() -> Path:
    return Path(os.environ.get("RECSYS_SHARED_DATA", REPO.parent / "shared" / "data"))


def load_hm(engine: Engine, limit: int | None) -> int:
    folder = shared_data() / "hm-fashion-sample"
    if not (folder / "items.csv").is_file():
        sys.exit(f"H&M sample not found at {folder} (set RECSYS_SHARED_DATA)")
    rows = []
    with open(folder / "items.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            desc = "\n".join(r[c] for c in HM_TEXT if r[c])
            image = str((folder / r["image"]).resolve()) if r["image"] else None
            h = hashlib.sha256(f"{r['prod_name']}|{desc}|{image}".encode()).hexdigest()
            rows.append(
                {"external_id": r["article_id"], "title": r["prod_name"], "description": desc, "image": image,
                 "content_hash": h}
            )
            if limit is not None and len(rows) >= limit:
                break
    with engine.begin() as conn:
        conn.execute(insert(Item), rows)
    return len(rows)


def bare_images(engine: Engine, encoder: Any, batch_size: int, max_pixels: int) -> tuple[int, float]:
    """Forward passes only, on the job's batches (same order and size); decoding is outside the timer."""
    with engine.connect() as conn:
        sources = [s for (s,) in conn.execute(select(Item.image).where(Item.image.is_not(None)).order_by(Item.id))]
    n, seconds = 0, 0.0
    for start in range(0, len(sources), batch_size):
        batch = np.stack([encoder.preprocess(load_image(s, max_pixels)) for s in sources[start : start + batch_size]])
        t = time.perf_counter()
        encoder.encode_tensors(batch)
        seconds += time.perf_counter() - t
        n += len(batch)
    return n, seconds


def bare_texts(engine: Engine, encoder: Any, batch_size: int) -> tuple[int, float]:
    """The job's text batches (pages of ``PAGE_SIZE`` items by id, sorted by length), forward only."""
    with engine.connect() as conn:
        cols = select(Item.id, Item.content_hash, Item.title, Item.description, Item.image).order_by(Item.id)
        items = [PendingItem(*r) for r in conn.execute(cols)]
    batches = [
        texts
        for start in range(0, len(items), PAGE_SIZE)
        for _, texts in text_batches(items[start : start + PAGE_SIZE], batch_size)
    ]
    t = time.perf_counter()
    for texts in batches:
        encoder.encode(texts)
    return len(items), time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=None, help="first N items of items.csv (default: all 8,000)")
    ap.add_argument("--space", choices=["all", "text", "image"], default="all")
    ap.add_argument("--workers", type=int, default=None, help="image decoding processes (default: config, 2)")
    ap.add_argument("--batch-size", type=int, default=None, help="image and text batch size (default: config, 64)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the figures as JSON here")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = EncodersConfig()
    image_cfg = cfg.image.model_copy(
        update={k: v for k, v in {"workers": args.workers, "batch_size": args.batch_size}.items() if v is not None}
    )
    text_cfg = cfg.text.model_copy(update={"batch_size": args.batch_size} if args.batch_size else {})
    cfg = cfg.model_copy(update={"image": image_cfg, "text": text_cfg})
    text_enc = build_text_encoder(cfg.text) if args.space in ("all", "text") else None
    image_enc = build_image_encoder(cfg.image) if args.space in ("all", "image") else None

    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/bench.sqlite")
        upgrade(engine)
        n_items = load_hm(engine, args.limit)
        # The bare model runs right before and right after the job, on the job's batches; its throughput
        # is the mean of the two passes, so that a drift in machine load does not favour either side.
        bare: dict[str, list[float]] = {IMAGE: [], TEXT: []}

        def bare_pass() -> None:
            if image_enc is not None:
                n, s = bare_images(engine, image_enc, cfg.image.batch_size, cfg.image.max_pixels)
                bare[IMAGE].append(n / s)
            if text_enc is not None:
                n, s = bare_texts(engine, text_enc, cfg.text.batch_size)
                bare[TEXT].append(n / s)

        bare_pass()
        report = run_embed(engine, cfg, text_encoder=text_enc, image_encoder=image_enc, progress=args.progress)
        bare_pass()
        rows = [
            (space, enc.version, report.space(space), float(np.mean(bare[space])), bare[space])
            for space, enc in ((IMAGE, image_enc), (TEXT, text_enc))
            if enc is not None
        ]
        engine.dispose()

    print(
        f"\n{n_items} H&M items; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), image workers={cfg.image.workers}, "
        f"batch={cfg.image.batch_size}/{cfg.text.batch_size} (image/text)\n"
    )
    print("| space | encoder | items | job items/s | bare model items/s (before, after) | job / bare | failed |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for space, version, sr, mean_bare, passes in rows:
        print(
            f"| {space} | {version} | {sr.processed} | {sr.items_per_s:.1f} | {mean_bare:.1f} "
            f"({', '.join(f'{b:.1f}' for b in passes)}) | {sr.items_per_s / mean_bare:.2f}x | {sr.failed} |"
        )
    if report.failures:
        print(f"\nfailures: {report.failures_by_reason}")
    if args.json:
        write_json(args.json, {
            "bench": "embed", "items": n_items, "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()), "image_workers": cfg.image.workers,
            "batch_size": {"image": cfg.image.batch_size, "text": cfg.text.batch_size},
            "spaces": {
                space: {"encoder": version, "processed": sr.processed, "failed": sr.failed,
                        "job_items_per_s": sr.items_per_s,
                        "bare_items_per_s": mean_bare, "bare_passes": passes, "job_over_bare": sr.items_per_s / mean_bare}
                for space, version, sr, mean_bare, passes in rows
            },
            "failures": dict(report.failures_by_reason) if report.failures else {},
        })


def write_json(path: Path, figures: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
