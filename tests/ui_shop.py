"""The demo shop for the playground's tests: generated, loaded into a fresh SQLite file, embedded, trained.

A few extra items probe the pages and the media endpoint: a hostile title, a picture that is not an
image, a symlink pointing outside the image folders, a path with ``..``, a remote URL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recsys.config import Config, load_config
from recsys.demo.catalogue import generate_demo
from recsys.ingest import ingest_events, ingest_items
from recsys.ingest.items import upsert_item_records
from recsys.store.db import make_engine, upgrade

KEY = "ui-test-key"
HOSTILE_ID = "X<b>1"
HOSTILE_TITLE = '<script>alert("pwned")</script> mug'


def extra_items(images_dir: Path, outside: Path) -> list[dict[str, Any]]:
    """Items with awkward pictures; ``outside``: a folder that is not an image root."""
    (images_dir / "broken.jpg").write_bytes(b"this is not a jpeg")
    secret = outside / "secret.jpg"
    secret.write_bytes((images_dir / "D0001.jpg").read_bytes())  # a real picture, but not under a root
    link = images_dir / "escape.jpg"
    link.unlink(missing_ok=True)
    link.symlink_to(secret)
    base = {"description": "probe", "category": "mug", "price": 9.5}
    return [
        {**base, "id": HOSTILE_ID, "title": HOSTILE_TITLE, "image": str(images_dir / "D0002.jpg"),
         "attributes": {"note": "<img src=x onerror=alert(1)>"}},
        {**base, "id": "X-broken", "title": "broken picture mug", "image": str(images_dir / "broken.jpg")},
        {**base, "id": "X-escape", "title": "symlink escape mug", "image": str(link)},
        {**base, "id": "X-dotdot", "title": "dotdot mug", "image": f"{images_dir}/../../../{outside.name}/secret.jpg"},
        {**base, "id": "X-none", "title": "mug without a picture", "image": None},
        {**base, "id": "X-remote", "title": "remote picture mug", "image": "https://example.com/a.jpg"},
    ]


def build_ui_shop(root: Path, *, n_items: int = 60, n_users: int = 40, tiny: dict[str, Any] | None = None) -> Config:
    """Write a config under ``root/data``, load the demo shop (plus :func:`extra_items`), embed, align, train.

    ``tiny``: the tiny random encoders of ``recsys.encoders.testing`` (``{"text_path", "text", "image"}``);
    ``None``: the offline default encoders, as ``recsys demo`` uses.
    """
    from recsys.align.settings import AlignConfig
    from recsys.align.store import train_from_store
    from recsys.embed import run_embed
    from recsys.encoders.factory import build_encoders
    from recsys.recommend.model import train_feed

    data_dir = root / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    outside = root / "outside"
    outside.mkdir(exist_ok=True)
    url = f"sqlite:///{data_dir / 'recsys.sqlite'}"
    text_cfg = (f"encoders:\n  text:\n    name: {tiny['text_path']}\n    batch_size: 4\n    max_length: 32\n" if tiny else "")
    cfg_file = data_dir / "config.yaml"
    cfg_file.write_text(f"data_dir: {data_dir}\ndatabase:\n  url: {url}\n{text_cfg}service:\n  api_keys: [{KEY}]\n")
    config = load_config(cfg_file, env={})
    engine = make_engine(url)
    upgrade(engine)
    files = generate_demo(data_dir / "demo", n_items=n_items, n_users=n_users, seed=1)
    preset = config.ingest.presets["demo"]
    ingest_items(engine, files.items_csv, preset.items, reject_path=data_dir / "r1.jsonl")
    ingest_events(engine, files.events_csv, preset.events, config.event_types, reject_path=data_dir / "r2.jsonl")
    upsert_item_records(engine, extra_items(files.images_dir, outside))
    text, image = (tiny["text"], tiny["image"]) if tiny else build_encoders(config.encoders)
    run_embed(engine, config.encoders, text_encoder=text, image_encoder=image)
    train_feed(engine, config)
    align = AlignConfig(dim=16, hidden_dim=32, epochs=3, ensemble=1, min_items=10, batch_size=16)  # seconds, not minutes
    train_from_store(engine, config, align, versions=(text.version, image.version))
    engine.dispose()
    return config
