"""The home feed the API serves is the ranking the offline evaluation computes under the same model.

On MovieLens and H&M: ingest, embed (tiny text encoder), ``recsys train`` (the CLI), then for a sample
of users compare ``GET /v1/users/<id>/recommendations?k=10`` with the evaluation's own scoring of the
trained artifact (``HybridRecommender.score`` + ``rank_top_k`` with the evaluation's tie order, the
user's training items excluded), as ``recsys.evaluation.runner.evaluate_model`` ranks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from recsys.cli import cli
from recsys.config import load_config
from recsys.store.db import make_engine

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def tiny_text(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from recsys.encoders.testing import save_tiny_text_model, tiny_text_encoder

    path = save_tiny_text_model(tmp_path_factory.mktemp("tiny-text"))
    return path, tiny_text_encoder(path)


def _load(shared_data: Path, folder: str, preset: str, tmp: Path, tiny: Any) -> tuple[Any, Any]:
    from recsys.embed import run_embed

    data = tmp / "data"
    data.mkdir()
    cfg_file = tmp / "config.yaml"
    cfg_file.write_text(
        f"data_dir: {data}\nencoders:\n  text:\n    name: {tiny[0]}\n    batch_size: 64\n    max_length: 32\n"
        # small grids keep the test quick; the selection and the scoring are the real code
        "cf:\n  iterations: 5\n  hybrid:\n    rounds: 1\n    profile_gamma: [0.0, 10.0]\n    profile_tau: [3.0, 1000.0]\n"
        "    cold_offset: [0.0]\n    cold_scale: [1.0]\n    cold_carves: 1\n"
    )
    env = {"RECSYS_CONFIG": str(cfg_file)}
    runner = CliRunner()
    assert runner.invoke(cli, ["--config", str(cfg_file), "db", "upgrade"], env=env).exit_code == 0
    for kind in ("items", "events"):
        res = runner.invoke(cli, ["--config", str(cfg_file), "ingest", kind, str(shared_data / folder / f"{kind}.csv"),
                                  "--preset", preset], env=env)
        assert res.exit_code == 0, res.output
    config = load_config(cfg_file, env={})
    engine = make_engine(config.database_url)
    run_embed(engine, config.encoders, text_encoder=tiny[1], image_encoder=None)
    res = runner.invoke(cli, ["--config", str(cfg_file), "train"], env=env)
    assert res.exit_code == 0, res.output
    assert "artifact feed/" in res.output
    return config, engine


@pytest.mark.parametrize(("folder", "preset"), [("movielens-100k-posters", "movielens"), ("hm-fashion-sample", "hm")])
def test_api_feed_equals_offline_ranking(shared_data: Path, tmp_path: Path, tiny_text: Any, folder: str,
                                         preset: str) -> None:
    from recsys.ranking.metrics import rank_top_k
    from recsys.ranking.topk import tie_order
    from recsys.recommend.model import load_feed_model, read_store_history
    from recsys.serving import Runtime
    from services.app import create_app

    config, engine = _load(shared_data, folder, preset, tmp_path, tiny_text)
    model = load_feed_model(engine)
    assert model is not None and model.components.content is not None
    sh = read_store_history(engine, dict(config.event_types))
    offline = model.recommender(sh.history)
    rng = np.random.default_rng(7)
    users = np.sort(rng.choice(sh.history.n_users, size=25, replace=False))
    seen = sh.history.matrix()[users]
    expected = rank_top_k(offline.score(users), 10, seen, tie_order=tie_order(sh.history.n_items))

    rt = Runtime(config, engine, text_encoder=tiny_text[1])
    rt.reload()
    client = create_app(config, rt).test_client()
    assert client.get("/readyz").status_code == 200
    for u, row in zip(users, expected):
        # the service reads the same history row from SQL as training did (order, recency ranks, weights)
        mine, ref = rt.user_history(str(sh.user_ids[u])), sh.history.select(np.array([u]))
        assert np.array_equal(mine.items, ref.items) and np.array_equal(mine.rank, ref.rank)
        assert np.allclose(mine.weight, ref.weight)
        body = client.get(f"/v1/users/{sh.user_ids[u]}/recommendations?k=10").json
        assert body["cold_start"] is False
        got = [i["id"] for i in body["items"]]
        assert got == [str(sh.item_ids[c]) for c in row], f"user {sh.user_ids[u]}"
        assert body["model_version"] == model.version

    # `recsys export` (the CLI) writes every user's top 100, equal to the API for the sampled users
    import pyarrow.parquet as pq

    out = tmp_path / "recs.parquet"
    res = CliRunner().invoke(cli, ["--config", str(tmp_path / "config.yaml"), "export", "recommendations",
                                   "--out", str(out), "-k", "100", "--no-progress"])
    assert res.exit_code == 0, res.output
    table = pq.read_table(out)
    assert table.num_rows == 100 * sh.history.n_users
    by_user: dict[str, list[str]] = {}
    for uid, item in zip(table.column("user_id").to_pylist(), table.column("item_id").to_pylist()):
        by_user.setdefault(uid, []).append(item)
    assert len(by_user) == sh.history.n_users
    for u in users[:8]:
        uid = str(sh.user_ids[u])
        api = [i["id"] for i in client.get(f"/v1/users/{uid}/recommendations?k=100").json["items"]]
        assert by_user[uid] == api, uid
    engine.dispose()
