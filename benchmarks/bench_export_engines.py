"""``recsys export`` users/s (items/s) with ``--engine local`` vs ``--engine ray`` (local Ray instance), MovieLens.

Ingests ``movielens-100k-posters`` (1,682 movies, 943 users, 100,000 ratings) into a temporary SQLite
database, embeds the titles (the configured offline text encoder, or ``--tiny`` for a tiny random one)
and trains the feed model with small grids (the export's cost does not depend on the grid), then runs
the real command once per engine and chunk size, each in a fresh process, and prints a markdown table.
"wall s" is the whole command (process start, loading the serving state, and for the Ray engine the
Ray start and the actors loading their own serving state); "/s" is what the command reports
(``run_export``: histories, ranking, writing -- and for Ray the instance and actor start-up). The
two engines' files are compared too (rows equal after sorting).

    python benchmarks/bench_export_engines.py
    python benchmarks/bench_export_engines.py --tiny --chunk-sizes 2048 256 --ray-actors 2
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_embed_engines import run, shared_data  # noqa: E402 - the same CLI runner

SMALL_GRIDS = {"iterations": 5, "hybrid": {"rounds": 1, "profile_gamma": [0.0, 10.0], "profile_tau": [3.0, 1000.0],
                                           "cold_offset": [0.0], "cold_scale": [1.0]}}


def prepare(tmp: Path, tiny: bool, actors: int) -> Path:
    """A trained MovieLens deployment under ``tmp``; returns its config file."""
    folder = shared_data() / "movielens-100k-posters"
    if not (folder / "items.csv").is_file():
        sys.exit(f"MovieLens not found at {folder} (set RECSYS_SHARED_DATA)")
    settings: dict = {"data_dir": str(tmp / "data"), "cf": SMALL_GRIDS, "ray": {"actors": actors}}
    if tiny:
        from recsys.encoders.testing import save_tiny_text_model

        settings["encoders"] = {"text": {"name": str(save_tiny_text_model(tmp / "tiny-text")), "max_length": 32}}
    config = tmp / "config.yaml"
    config.write_text(yaml.safe_dump(settings))
    base = ["--config", str(config)]
    run([*base, "db", "upgrade"])
    for kind in ("items", "events"):
        run([*base, "ingest", kind, str(folder / f"{kind}.csv"), "--preset", "movielens"])
    run([*base, "embed", "--space", "text"])
    run([*base, "train"])
    return config


def same_rows(a: Path, b: Path, key: str) -> bool:
    ta = pq.read_table(a).sort_by([(key, "ascending"), ("rank", "ascending")])
    tb = pq.read_table(b).sort_by([(key, "ascending"), ("rank", "ascending")])
    return ta.drop_columns(["score"]).equals(tb.drop_columns(["score"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="a tiny random text encoder instead of the configured one")
    ap.add_argument("-k", type=int, default=20)
    ap.add_argument("--chunk-sizes", type=int, nargs="+", default=[2048, 256])
    ap.add_argument("--ray-actors", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        t = time.perf_counter()
        config = prepare(tmp, args.tiny, args.ray_actors)
        print(f"set-up (ingest, embed, train): {time.perf_counter() - t:.0f} s; load average {os.getloadavg()}")
        print()
        print("| export | engine | chunk size | chunks | wall s | reported /s | rows equal |")
        print("|---|---|---:|---:|---:|---:|---|")
        for what, key in (("recommendations", "user_id"), ("similar", "item_id")):
            for chunk in args.chunk_sizes:
                files = {}
                for engine in ("local", "ray"):
                    out = tmp / f"{what}-{engine}-{chunk}.parquet"
                    wall, stdout = run(["--config", str(config), "export", what, "--out", str(out), "-k", str(args.k),
                                        "--engine", engine, "--chunk-size", str(chunk), "--no-progress"])
                    m = re.search(r"for (\d+) \w+ .*?, ([\d,]+)/s\)", stdout)
                    n, rate = (int(m.group(1)), m.group(2)) if m else (0, "?")
                    files[engine] = out
                    equal = same_rows(files["local"], out, key) if engine == "ray" else ""
                    chunks = -(-n // chunk)
                    print(f"| {what} | {engine} | {chunk} | {chunks} | {wall:.1f} | {rate} | {equal} |", flush=True)
        print()
        print(f"load average after: {os.getloadavg()}; cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
