"""Reliability: slow and hostile image references against the live service (issue 11, items 1 and 2).

Starts the service under gunicorn on 127.0.0.1 (a free port, 2 workers, a fresh SQLite data dir with a
small demo shop embedded by tiny random CLIP towers), serves a slow image (one byte a second), slow
headers, an endless body, a redirect to loopback and a plain image from local test servers, and sends
``PUT /v1/items/<id>`` with them and with hostile local paths and addresses. Each case is one row: the
status, the seconds the PUT took, its deadline (``service.upsert_wait_s`` + a margin for HTTP), whether
it finished in time, what the answer said, and how many requests the hostile servers got from it.

    python benchmarks/reliability_images.py [--wait 2] [--fetch-timeout 4] [--json OUT]

Importable: :func:`run_cases` returns the rows (dicts); :func:`markdown` turns them into the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for p in (HERE, REPO):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from http_load import gunicorn_server, machine_note  # noqa: E402

from tests import image_servers as srv  # noqa: E402

KEY = "reliability-key"
MARGIN_S = 1.0
"""Allowed on top of ``service.upsert_wait_s`` for the HTTP round trip and the JSON answer."""


@contextmanager
def _shop(tmp: Path, *, wait_s: float, fetch_s: float, allowed: list[str]) -> Iterator[Path]:
    """A data dir with the demo shop ingested and embedded; yields its config file."""
    import yaml

    from recsys.config import load_config
    from recsys.demo.catalogue import generate_demo
    from recsys.embed import run_embed
    from recsys.store.image_roots import image_policy, image_roots, ingest_roots
    from recsys.encoders.factory import build_encoders
    from recsys.encoders.testing import save_tiny_clip_model
    from recsys.ingest import ingest_items
    from recsys.store.db import make_engine, upgrade

    data = tmp / "data"
    clip = f"clip:{save_tiny_clip_model(tmp / 'clip')}"
    cfg_file = tmp / "config.yaml"
    cfg_file.write_text(yaml.safe_dump({
        "data_dir": str(data),
        "encoders": {"text": {"name": clip}, "image": {"name": clip, "workers": 0, "fetch_timeout_s": fetch_s}},
        "images": {"allowed_hosts": allowed},
        "service": {"api_keys": [KEY], "upsert_wait_s": wait_s, "threads": 1},
    }))
    config = load_config(cfg_file, env={})
    (data / "images").mkdir(parents=True)
    (data / "images" / "ok.png").write_bytes(srv.png_bytes())
    (data / "images" / "ok2.png").write_bytes(srv.png_bytes((200, 50, 50)))
    engine = make_engine(config.database_url)
    upgrade(engine)
    files = generate_demo(data / "demo", n_items=40, n_users=20, seed=1)
    ingest_items(engine, files.items_csv, config.ingest.presets["demo"].items, reject_path=tmp / "rejects.jsonl",
                 policy=image_policy(config, ingest_roots(config, files.items_csv)))
    text, image = build_encoders(config.encoders)
    run_embed(engine, config.encoders, text_encoder=text, image_encoder=image,
              policy=image_policy(config, image_roots(config, engine)))
    engine.dispose()
    yield cfg_file


def _image_error(cfg_file: Path, item_id: str) -> str | None:
    from sqlalchemy import select

    from recsys.config import load_config
    from recsys.embed import IMAGE, encoder_versions, stored_errors
    from recsys.store.db import make_engine
    from recsys.store.models import Item

    config = load_config(cfg_file, env={})
    engine = make_engine(config.database_url)
    try:
        with engine.connect() as conn:
            internal = conn.execute(select(Item.id).where(Item.external_id == item_id)).scalar_one_or_none()
        for version, _ in encoder_versions(engine, IMAGE):
            errors = dict(stored_errors(engine, IMAGE, version))
            if internal in errors:
                return errors[internal]
        return None
    finally:
        engine.dispose()


def _put(base: str, item_id: str, image: str, deadline_s: float) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        r = requests.put(f"{base}/v1/items/{item_id}", json={"title": f"Lamp {item_id}", "image": image},
                         headers={"X-API-Key": KEY}, timeout=deadline_s + 60)
        status, body = r.status_code, r.json()
    except requests.RequestException as exc:
        status, body = 0, {"error": {"message": f"{type(exc).__name__}: {exc}"}}
    took = time.monotonic() - t0
    if status == 200:
        errors = body.get("image_errors") or []
        outcome = f"servable={str(body.get('servable')).lower()}" + (
            f"; image {errors[0]['reason']}: {errors[0]['detail'][:70]}" if errors else "")
    else:
        err = body.get("error", {})
        outcome = str(err.get("message", ""))[:90]  # starts with the field it names
    return {"status": status, "seconds": round(took, 3), "deadline_s": deadline_s,
            "within_deadline": status != 0 and status < 500 and took <= deadline_s, "outcome": outcome}


def run_cases(*, workers: int = 2, wait_s: float = 2.0, fetch_s: float = 4.0,
              log_dir: Path | None = None) -> list[dict[str, Any]]:
    """Start everything, send the PUTs, stop everything; one row per case (see the module docstring)."""
    rows: list[dict[str, Any]] = []
    deadline = wait_s + MARGIN_S
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="reliability_images_")))
        target = stack.enter_context(srv.serve({"/a.png": srv.image()}))
        slow = stack.enter_context(srv.serve({"/slow.png": srv.trickle(per_byte_s=1.0),
                                              "/slow-headers.png": srv.slow_headers(200)}))
        big = stack.enter_context(srv.serve({"/endless.png": srv.endless(seconds=60)}))
        hop = stack.enter_context(srv.serve({"/to-loopback": srv.redirect(f"{target.url}/a.png"),
                                             "/to-metadata": srv.redirect("http://169.254.169.254/latest/meta-data/")}))
        allowed = [f"127.0.0.1:{s.port}" for s in (slow, big, hop)]  # stand-ins for a shop's private CDN
        cfg_file = stack.enter_context(_shop(tmp, wait_s=wait_s, fetch_s=fetch_s, allowed=allowed))
        log = (log_dir or tmp) / "gunicorn-reliability-images.log"
        server = stack.enter_context(gunicorn_server(
            "services.wsgi:app", log_path=log, cwd=REPO, gunicorn_args=("-w", str(workers)), ready_path="/readyz",
            env={**{k: v for k, v in os.environ.items() if not k.startswith("RECSYS_")},
                 "RECSYS_CONFIG": str(cfg_file)}))
        hostile = (target, slow, big, hop)

        def case(name: str, item_id: str, image: str) -> None:
            before = sum(sum(s.hits.values()) for s in hostile)
            row = {"case": name, "reference": image if len(image) < 60 else image[:57] + "...",
                   **_put(server.base_url, item_id, image, deadline)}
            row["server_requests"] = sum(sum(s.hits.values()) for s in hostile) - before
            rows.append(row)

        case("slow body, 1 byte/s (allowlisted host)", "R-SLOW", f"{slow.url}/slow.png")
        case("slow headers, 1 byte/s (allowlisted host)", "R-SLOWH", f"{slow.url}/slow-headers.png")
        case("local image right after the slow ones", "R-LOCAL", "ok.png")
        case("endless body without Content-Length", "R-BIG", f"{big.url}/endless.png")
        case("redirect from an allowlisted host to loopback", "R-HOP", f"{hop.url}/to-loopback")
        case("redirect from an allowlisted host to 169.254.169.254", "R-HOP2", f"{hop.url}/to-metadata")
        case("loopback by name (localhost)", "R-NAME", f"http://localhost:{target.port}/a.png")
        case("loopback IP, not allowlisted", "R-LOOP", f"{target.url}/a.png")
        case("cloud metadata address", "R-META", "http://169.254.169.254/latest/meta-data/")
        case("private address", "R-TEN", "http://10.0.0.7/a.png")
        case("IPv4-mapped IPv6 loopback", "R-MAPPED", f"http://[::ffff:127.0.0.1]:{target.port}/a.png")
        case("file: URL", "R-FILE", "file:///etc/passwd")
        case("absolute local path outside the roots", "R-ETC", "/etc/passwd")
        case("relative path climbing out", "R-DOTS", "../../../../etc/passwd")
        slow_hits = slow.hits["/slow.png"]
        time.sleep(fetch_s + 1.0)  # the slow downloads end at their deadline, in the background
        case("another local image after the slow ones ended", "R-LOCAL2", "ok2.png")
        recorded = _image_error(cfg_file, "R-SLOW")
        rows.append({"case": "slow image recorded on its item, never fetched again", "reference": "R-SLOW",
                     "status": "-", "seconds": "-", "deadline_s": "-",
                     "within_deadline": recorded is not None and slow.hits["/slow.png"] == slow_hits == 1,
                     "outcome": (recorded or "not recorded")[:90], "server_requests": slow.hits["/slow.png"]})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| case | reference | status | seconds | deadline (s) | within deadline | answer | requests to the test servers |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ok = "yes" if r["within_deadline"] else "NO"
        outcome = str(r["outcome"]).replace("|", "\\|")
        lines.append(f"| {r['case']} | `{r['reference']}` | {r['status']} | {r['seconds']} | {r['deadline_s']} | {ok} "
                     f"| {outcome} | {r['server_requests']} |")
    every = all(r["within_deadline"] for r in rows)
    lines.append(f"| **every request within its deadline** | | | | | {'yes' if every else 'NO'} | | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--wait", type=float, default=2.0, help="service.upsert_wait_s")
    ap.add_argument("--fetch-timeout", type=float, default=4.0, help="encoders.image.fetch_timeout_s")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    rows = run_cases(workers=args.workers, wait_s=args.wait, fetch_s=args.fetch_timeout)
    print(markdown(rows))
    print(f"\n{machine_note()}")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
