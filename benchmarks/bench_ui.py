"""Server time of the playground's pages on a loaded data directory (default: the demo shop of ``make demo``).

Each page is requested in process through Flask's test client (no network, no browser): the figure is the
time the service spends on the request, which is what a page view costs the server. Every page is also
compared with the JSON API call that ranks the same thing, measured in the same run (its baseline).

    python benchmarks/bench_ui.py [--data-dir .recsys] [--repeat 40] [--json OUT]

The target: every page under 300 ms at p95 on the demo catalogue.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TARGET_MS = 300.0


def _times(call: Callable[[int], Any], repeat: int) -> list[float]:
    call(0)  # warm: first-use imports, encoder loading
    out = []
    for i in range(repeat):
        t0 = time.perf_counter()
        res = call(i + 1)
        out.append((time.perf_counter() - t0) * 1000)
        if res.status_code >= 400:
            raise SystemExit(f"HTTP {res.status_code}: {res.get_data(as_text=True)[:300]}")
    return out


def _row(name: str, ms: list[float], base: list[float] | None) -> dict[str, Any]:
    p95 = sorted(ms)[int(0.95 * (len(ms) - 1))]
    row = {"page": name, "p50_ms": statistics.median(ms), "p95_ms": p95, "max_ms": max(ms)}
    if base:
        row["api_p50_ms"] = statistics.median(base)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=".recsys")
    ap.add_argument("--repeat", type=int, default=40)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from recsys.config import load_config
    from recsys.serving.browse import some_users
    from services.app import create_app

    config = load_config(None, env={**os.environ, "RECSYS_DATA_DIR": args.data_dir})
    app = create_app(config)
    client = app.test_client()
    rt = app.extensions["recsys"]
    ids = list(rt._st().ids)
    users = [u for u, _ in some_users(rt.engine, 50)]
    words = ["red star mug", "striped cap", "blue tote bag", "heart notebook", "zigzag poster", "green t-shirt"]
    picture = next((Path(args.data_dir) / "demo" / "images").glob("*.jpg")).read_bytes()

    def upload(i: int) -> Any:
        return client.post("/ui/search", data={"image": (io.BytesIO(picture), "q.jpg"), "k": "24"},
                           content_type="multipart/form-data")

    def api_upload(i: int) -> Any:
        return client.post("/v1/search", data={"image": (io.BytesIO(picture), "q.jpg"), "k": "24"},
                           content_type="multipart/form-data")

    def item(i: int) -> str:
        return ids[(7 * i) % len(ids)]

    cases: list[tuple[str, Callable[[int], Any], Callable[[int], Any] | None]] = [
        ("search: text (24 results)", lambda i: client.get(f"/ui/search?q={words[i % len(words)]}&k=24"),
         lambda i: client.post("/v1/search", json={"text": words[i % len(words)], "k": 24})),
        ("search: picture upload", upload, api_upload),
        ("item: details, 12 similar, users", lambda i: client.get(f"/ui/items/{item(i)}"),
         lambda i: client.get(f"/v1/items/{item(i)}/similar?k=12")),
        ("user: history + feed (12)", lambda i: client.get(f"/ui/users/{users[i % len(users)]}"),
         lambda i: client.get(f"/v1/users/{users[i % len(users)]}/recommendations?k=12")),
        ("user: feed, diversity 0.5", lambda i: client.get(f"/ui/users/{users[i % len(users)]}?diversity=0.5"),
         lambda i: client.get(f"/v1/users/{users[i % len(users)]}/recommendations?k=12&diversity=0.5")),
        ("user: feed fragment (after a click)", lambda i: client.get(f"/ui/users/{users[i % len(users)]}/feed"), None),
        ("overview", lambda i: client.get("/ui/overview"), None),
        ("media: thumbnail 320 px (cached)", lambda i: client.get(f"/media/items/{item(i % 5)}?size=320"), None),
    ]
    load_before = os.getloadavg()
    rows = [_row(name, _times(page, args.repeat), _times(api, args.repeat) if api else None) for name, page, api in cases]
    # a thumbnail's first request also renders it (Pillow) before caching: that step alone, uncached
    from recsys.serving.media import _render

    pictures = sorted((Path(args.data_dir) / "demo" / "images").glob("*.jpg"))[: args.repeat]
    render = []
    for p in pictures:
        t0 = time.perf_counter()
        _render(p, 320, config.encoders.image.max_pixels)
        render.append((time.perf_counter() - t0) * 1000)
    rows.append(_row("media: first render of a 320 px thumbnail (added to the cached time)", render, None))
    load_after = os.getloadavg()

    print(f"\nplayground server time, {len(ids)} items, {args.repeat} requests per page, in process (Flask test client)")
    print(f"machine: {os.cpu_count()} CPU cores; load average before {load_before[0]:.2f}, after {load_after[0]:.2f}\n")
    print("| page | p50 ms | p95 ms | max ms | JSON API p50 ms (same run) | target p95 | met? |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        api = f"{r['api_p50_ms']:.1f}" if "api_p50_ms" in r else "-"
        print(f"| {r['page']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['max_ms']:.1f} | {api} | < {TARGET_MS:.0f} | "
              f"{'yes' if r['p95_ms'] < TARGET_MS else 'NO'} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "load": [load_before, load_after]}, indent=2))


if __name__ == "__main__":
    main()
