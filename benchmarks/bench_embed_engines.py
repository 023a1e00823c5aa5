"""``recsys embed`` items/s with ``--engine local`` vs ``--engine ray`` (local Ray instance), MovieLens.

Ingests ``movielens-100k-posters/items.csv`` (1,682 movies, 1,396 posters) into a temporary SQLite
database, then runs the real command once per engine on an empty ``item_embeddings`` table, each in a
fresh process, and prints a markdown table. The wall time is the whole command (process start, model
loading, Ray start and actors for the Ray engine); items/s is what the command reports for its loop.
The vectors of the two engines are compared too (max absolute difference).

    python benchmarks/bench_embed_engines.py                      # text space, offline MiniLM
    python benchmarks/bench_embed_engines.py --space image --ray-actors 2
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recsys.embed import encoder_versions, load_item_vectors  # noqa: E402
from recsys.store.db import make_engine  # noqa: E402
from recsys.store.models import ItemEmbedding  # noqa: E402

RECSYS = [str(Path(sys.executable).parent / "recsys")]  # the console script of this interpreter's venv


def shared_data() -> Path:
    return Path(os.environ.get("RECSYS_SHARED_DATA", REPO.parent / "shared" / "data"))


def run(args: list[str]) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run([*RECSYS, *args], check=False, capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        sys.exit(f"recsys {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
    return time.perf_counter() - t, out.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", choices=["text", "image"], default="text")
    ap.add_argument("--ray-actors", type=int, default=2)
    args = ap.parse_args()
    items = shared_data() / "movielens-100k-posters" / "items.csv"
    if not items.is_file():
        sys.exit(f"MovieLens not found at {items} (set RECSYS_SHARED_DATA)")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.sqlite"
        config = Path(tmp) / "config.yaml"
        config.write_text(yaml.safe_dump({"data_dir": tmp, "database": {"url": url}}))
        base = ["--config", str(config)]
        run([*base, "db", "upgrade"])
        run([*base, "ingest", "items", str(items), "--preset", "movielens"])
        engine = make_engine(url)
        results = []
        vectors = []
        for name, extra in (("local", []), ("ray", ["--engine", "ray", "--ray-actors", str(args.ray_actors)])):
            with engine.begin() as conn:
                conn.execute(ItemEmbedding.__table__.delete())
            load_before = os.getloadavg()[0]
            wall, out = run([*base, "embed", "--space", args.space, "--no-progress", *extra])
            load_after = os.getloadavg()[0]
            m = re.search(r"(\d+) embedded, (\d+) failed.*?([\d.]+) items/s over ([\d.]+) s", out)
            if m is None:
                sys.exit(f"unexpected output: {out}")
            version = encoder_versions(engine, args.space)[0][0]
            vectors.append(load_item_vectors(engine, args.space, version))
            results.append((name, int(m[1]) + int(m[2]), float(m[3]), float(m[4]), wall, load_before, load_after))
        engine.dispose()
    same_ids = vectors[0][0].tolist() == vectors[1][0].tolist()
    diff = float(np.abs(vectors[0][1] - vectors[1][1]).max()) if same_ids else float("nan")
    print(f"MovieLens {args.space} space, {os.cpu_count()} CPUs, Ray actors: {args.ray_actors}\n")
    print("| engine | items | items/s (loop) | loop s | command wall s | load avg before/after |")
    print("|---|---|---|---|---|---|")
    for name, n, ips, loop, wall, lb, la in results:
        print(f"| {name} | {n} | {ips:.1f} | {loop:.1f} | {wall:.1f} | {lb:.2f} / {la:.2f} |")
    print(f"\nsame items: {same_ids}; max |local - ray| = {diff:.2e}")


if __name__ == "__main__":
    main()
