"""Accuracy and speed of int8 dynamic quantization of the text encoder, on H&M texts.

Encodes the item texts (title + description, as the embedding job does) with the fp32 model and with
int8 dynamic-quantized copies (the one ``encoders.text.quantize: true`` gives, and two simpler schemes
for comparison) and prints one markdown table:

- cosine between each item's fp32 and int8 vectors (mean, 1st percentile, min);
- item -> item retrieval: overlap of the top-10 neighbours found with int8 vectors with the fp32 ones;
- query -> item retrieval: for "<colour> <product type>" queries built from the catalogue (e.g.
  "black trousers"), the overlap of the top-10 with fp32's, and the share of the top-10 whose product
  type and colour match the query (precision@10) for each model;
- texts/s of each model on the same batches.

    python benchmarks/bench_text_quantization.py --limit 2000
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recsys.embed import item_text  # noqa: E402
from recsys.encoders.factory import build_text_encoder  # noqa: E402
from recsys.encoders.settings import TextEncoderConfig  # noqa: E402

HM_TEXT = ("product_type_name", "colour_group_name", "section_name", "detail_desc")


def load_rows(limit: int) -> list[dict[str, str]]:
    shared = Path(os.environ.get("RECSYS_SHARED_DATA", REPO.parent / "shared" / "data"))
    path = shared / "hm-fashion-sample" / "items.csv"
    if not path.is_file():
        sys.exit(f"H&M sample not found at {path} (set RECSYS_SHARED_DATA)")
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))[:limit]


def top_k(queries: np.ndarray, docs: np.ndarray, k: int, exclude_self: bool = False) -> np.ndarray:
    sims = queries @ docs.T
    if exclude_self:
        np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b, strict=True)]))


def timed_encode(encoder: Any, texts: list[str], batch_size: int) -> tuple[np.ndarray, float]:
    encoder.encode(texts[:batch_size])  # warm-up
    t = time.perf_counter()
    out = np.concatenate([encoder.encode(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)])
    return out, len(texts) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=2000, help="first N items of items.csv (accuracy)")
    ap.add_argument("--speed-sample", type=int, default=512, help="texts timed per pass (speed)")
    ap.add_argument("--model", default=TextEncoderConfig().name)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()

    import torch

    from recsys.encoders.text import TransformerTextEncoder, quantize_dynamic_int8

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = load_rows(args.limit)
    texts = [item_text(r["prod_name"], "\n".join(r[c] for c in HM_TEXT if r[c])) for r in rows]
    fp32 = build_text_encoder(TextEncoderConfig(name=args.model, batch_size=args.batch_size))

    def variant(**kw: object) -> TransformerTextEncoder:
        model = quantize_dynamic_int8(copy.deepcopy(fp32.model), **kw)  # type: ignore[arg-type]
        return TransformerTextEncoder(model, fp32.tokenizer, args.model, batch_size=args.batch_size, quantized=True)

    models = {
        "fp32": fp32,
        "int8 per-tensor, all Linear": variant(per_channel=False, keep_fp32=None),
        "int8 per-channel, all Linear": variant(per_channel=True, keep_fp32=None),
        "int8 per-channel, FFN-out fp32 (config default)": build_text_encoder(
            TextEncoderConfig(name=args.model, batch_size=args.batch_size, quantize=True)
        ),
    }
    vecs = {name: enc.encode(texts) for name, enc in models.items()}

    # Speed: alternate the models twice on the same batches, so that a change in load favours none.
    sample = texts[: args.speed_sample]
    speed: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(2):
        for name, enc in models.items():
            speed[name].append(timed_encode(enc, sample, args.batch_size)[1])

    pairs = sorted({(r["colour_group_name"], r["product_type_name"]) for r in rows})
    counts = {p: 0 for p in pairs}
    for r in rows:
        counts[(r["colour_group_name"], r["product_type_name"])] += 1
    pairs = [p for p in pairs if counts[p] >= args.k]  # queries with at least k right answers
    queries = [f"{c} {t}".lower() for c, t in pairs]
    ref_items = top_k(vecs["fp32"], vecs["fp32"], args.k, exclude_self=True)
    ref_q = top_k(fp32.encode(queries), vecs["fp32"], args.k)

    print(
        f"\n{len(texts)} H&M item texts (speed: {len(sample)}, two alternating passes), model {args.model}, "
        f"{torch.get_num_threads()} torch threads, batch {args.batch_size}, k={args.k}, "
        f"{len(queries)} colour+type queries\n"
    )
    print(
        "| model | texts/s | speed-up | cosine to fp32: mean / p1 / min | item->item top-10 overlap | "
        "query top-10 overlap | query precision@10 |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    base = float(np.mean(speed["fp32"]))
    for name, enc in models.items():
        cos = np.sum(vecs["fp32"] * vecs[name], axis=1)
        items_nn = top_k(vecs[name], vecs[name], args.k, exclude_self=True)
        q_nn = top_k(enc.encode(queries), vecs[name], args.k)
        precision = np.mean(
            [
                np.mean([(rows[j]["colour_group_name"], rows[j]["product_type_name"]) == p for j in nn])
                for p, nn in zip(pairs, q_nn, strict=True)
            ]
        )
        sp = float(np.mean(speed[name]))
        print(
            f"| {name} | {sp:.1f} | {sp / base:.2f}x | "
            f"{cos.mean():.4f} / {np.percentile(cos, 1):.4f} / {cos.min():.4f} | "
            f"{overlap(ref_items, items_nn):.3f} | {overlap(ref_q, q_nn):.3f} | {precision:.3f} |"
        )


if __name__ == "__main__":
    main()
