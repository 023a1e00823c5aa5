"""Cross-modal metrics and the H&M protocol (EVALUATION-hm.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys.align.metrics import DIRECTIONS, chance_metrics, crossmodal_metrics, metrics_from_ranks, retrieval_ranks
from recsys.align.settings import AlignConfig
from recsys.errors import InputFormatError
from recsys.evaluation.crossmodal import (
    format_table,
    load_hm_items,
    protocol_split,
    query_text,
    run_protocol,
    unaligned_rows,
    validation_split,
)


def test_ranks_of_a_hand_made_example() -> None:
    q = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
    g = np.array([[1, 0], [1, 0], [0, 1]], np.float32)
    # query 0: scores (1, 1, 0): its target ties with item 1 and ties count against it -> rank 2
    # query 1: scores (0, 0, 1): target 1 scores 0, below item 2 (1), tied with item 0 -> rank 3
    # query 2: scores (1, 1, 1): all tied -> rank 3
    np.testing.assert_array_equal(retrieval_ranks(q, g), [2, 3, 3])


def test_ranks_match_a_sort_oracle_and_do_not_depend_on_the_chunk() -> None:
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(50, 8)), rng.normal(size=(50, 8))
    scores = q @ g.T
    oracle = np.array([1 + np.sum(np.delete(scores[i], i) >= scores[i, i]) for i in range(50)])
    np.testing.assert_array_equal(retrieval_ranks(q, g), oracle)
    np.testing.assert_array_equal(retrieval_ranks(q, g, chunk=7), oracle)
    with pytest.raises(ValueError, match="same shape"):
        retrieval_ranks(q, g[:10])


def test_metrics_from_ranks() -> None:
    m = metrics_from_ranks(np.array([1, 2, 10, 11]))
    assert m == {"R@1": 0.25, "R@10": 0.75, "MRR": pytest.approx((1 + 0.5 + 0.1 + 1 / 11) / 4)}
    with pytest.raises(ValueError):
        metrics_from_ranks(np.array([]))


def test_identical_spaces_are_perfect_and_chance_is_exact() -> None:
    x = np.eye(20, dtype=np.float32)
    for direction in DIRECTIONS:
        assert crossmodal_metrics(x, x)[direction] == {"R@1": 1.0, "R@10": 1.0, "MRR": 1.0}
    c = chance_metrics(1600)
    assert c["R@10"] == 10 / 1600 and c["R@1"] == 1 / 1600
    # MRR of a random permutation: mean of 1/rank over uniform ranks; check against a simulation.
    rng = np.random.default_rng(0)
    sim = np.mean(1.0 / rng.integers(1, 1601, size=200_000))
    assert c["MRR"] == pytest.approx(sim, rel=0.03)


def test_unaligned_rows_measure_shared_spaces_and_say_chance_otherwise() -> None:
    rng = np.random.default_rng(0)
    t = rng.normal(size=(30, 4)).astype(np.float32)
    rows, notes = unaligned_rows(t, t)
    assert rows["unaligned (raw cosine)"]["text_to_image"]["R@1"] == 1.0 and not notes
    rows, notes = unaligned_rows(t, rng.normal(size=(30, 6)).astype(np.float32))
    assert rows == {"unaligned (chance)": {d: chance_metrics(30) for d in DIRECTIONS}}
    assert "4-d" in notes[0] and "6-d" in notes[0] and "random ranking" in notes[0]


def test_protocol_split_is_the_documented_permutation() -> None:
    s = protocol_split(100, n_test=20)
    perm = np.random.default_rng(0).permutation(100)
    np.testing.assert_array_equal(s.test, perm[:20])
    np.testing.assert_array_equal(s.train, perm[20:])
    v = validation_split(s.train, 20)
    assert len(v.test) == 20 and len(v.train) == 60
    assert not set(v.test) & set(s.test) and not set(v.train) & set(s.test) and not set(v.test) & set(v.train)
    with pytest.raises(ValueError):
        protocol_split(10, n_test=10)


def test_query_text_joins_the_non_empty_fields_in_order() -> None:
    row = {"prod_name": "Tights", "product_type_name": "Leggings", "colour_group_name": "Black",
           "section_name": " Ladies ", "detail_desc": "", "garment_group_name": "ignored"}
    assert query_text(row) == "Tights. Leggings. Black. Ladies"


def _write_items(path: Path, n: int = 3) -> Path:
    lines = ["article_id,prod_name,product_type_name,colour_group_name,section_name,detail_desc,image"]
    for i in range(n):
        lines.append(f"00{i},Name {i},Type,Red,Sec,\"Desc, with comma\",images/00{i}.jpg")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_load_hm_items_keeps_ids_as_strings_and_resolves_images(tmp_path: Path) -> None:
    items = load_hm_items(_write_items(tmp_path / "items.csv"))
    assert items.ids == ["000", "001", "002"]
    assert items.texts[1] == "Name 1. Type. Red. Sec. Desc, with comma"
    assert items.images[2] == (tmp_path / "images" / "002.jpg").resolve()


def test_load_hm_items_explains_bad_files(tmp_path: Path) -> None:
    with pytest.raises(InputFormatError, match="cannot read"):
        load_hm_items(tmp_path / "absent.csv")
    (tmp_path / "bad.csv").write_text("article_id,prod_name\n1,x\n")
    with pytest.raises(InputFormatError, match="missing column"):
        load_hm_items(tmp_path / "bad.csv")
    p = _write_items(tmp_path / "noimg.csv")
    p.write_text(p.read_text().replace("images/001.jpg", ""))
    with pytest.raises(InputFormatError, match="without an image"):
        load_hm_items(p)


def test_run_protocol_trains_on_train_rows_only_and_beats_chance() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, 6))
    text = z @ rng.normal(size=(6, 20)) + 0.3 * rng.normal(size=(400, 20))
    image = np.tanh(z @ rng.normal(size=(6, 30))) + 0.3 * rng.normal(size=(400, 30))
    split = protocol_split(400, n_test=100)
    cfg = AlignConfig(dim=16, hidden_dim=32, epochs=10, batch_size=64, ensemble=1, min_items=8, threads=1)
    linear = cfg.model_copy(update={"head": "linear", "epochs": 3})
    result = run_protocol(text.astype(np.float32), image.astype(np.float32), split, cfg,
                          text_encoder="t@1", image_encoder="i@1", baselines={"linear": linear})
    assert result.n_test == 100 and result.n_train == 300
    assert result.model is not None and result.model.metrics["n_train"] + result.model.metrics["n_val"] == 300
    assert list(result.rows) == ["unaligned (chance)", "linear", "aligned (mlp, dim 16 x 1)"]
    assert result.rows["linear"]["text_to_image"]["R@10"] > 3 * 10 / 100
    aligned = result.rows["aligned (mlp, dim 16 x 1)"]
    assert aligned["text_to_image"]["R@10"] > 3 * result.rows["unaligned (chance)"]["text_to_image"]["R@10"]
    table = format_table(result.rows)
    assert "| aligned (mlp, dim 16 x 1) | text → image |" in table and "| unaligned (chance) | image → text |" in table
    assert set(result.to_json()) == {"n_test", "n_train", "methods", "notes"}


@pytest.mark.shared_data
def test_protocol_split_on_the_shared_hm_items(shared_data: Path) -> None:
    path = shared_data / "hm-fashion-sample" / "items.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    items = load_hm_items(path)
    assert len(items.ids) == 8000 and len(set(items.ids)) == 8000
    split = protocol_split(len(items.ids))
    assert len(split.test) == 1600 and len(split.train) == 6400
    assert not set(split.test) & set(split.train)
    assert items.ids[0] == "0111565001"  # leading zeros kept
    assert items.texts[0].startswith("20 den 1p Stockings. Underwear Tights. Black. ")
    assert all(p.is_file() for p in items.images[:50])


def test_evaluate_search_command_prints_one_table_and_the_same_figures_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from click.testing import CliRunner

    import recsys.evaluation.hm_search
    from recsys.cli import cli

    rng = np.random.default_rng(0)
    z = rng.normal(size=(8000, 6))
    text = (z @ rng.normal(size=(6, 16)) + 0.5 * rng.normal(size=(8000, 16))).astype(np.float32)
    image = (np.tanh(z @ rng.normal(size=(6, 24))) + 0.5 * rng.normal(size=(8000, 24))).astype(np.float32)
    seen: list[Path] = []

    def fake_features(path: Path, *args: object, **kwargs: object) -> tuple[np.ndarray, np.ndarray, str, str]:
        seen.append(path)
        return text, image, "t@1", "i@1"

    monkeypatch.setattr(recsys.evaluation.hm_search, "hm_features", fake_features)
    (tmp_path / "none.yaml").write_text("{}\n")
    env = {"RECSYS_DATA_DIR": str(tmp_path / "data"), "RECSYS_CONFIG": str(tmp_path / "none.yaml")}
    args = ["evaluate-search", "--items", str(tmp_path / "items.csv"), "--set", "epochs=2", "--set", "ensemble=1",
            "--set", "dim=8", "--set", "hidden_dim=16"]
    runner = CliRunner()
    res = runner.invoke(cli, args, env=env)
    assert res.exit_code == 0, res.output
    assert "1600 test items, 6400 training items" in res.output
    lines = [line for line in res.output.splitlines() if line.startswith("| aligned")]
    assert [line.split("|")[2].strip() for line in lines] == ["text → image", "image → text"]
    assert seen == [tmp_path / "items.csv"]

    res = runner.invoke(cli, [*args, "--json"], env=env)
    out = json.loads(res.output)
    t2i = out["methods"]["aligned (mlp, dim 8 x 1)"]["text_to_image"]
    assert f"| {t2i['R@1']:.3f} | {t2i['R@10']:.3f} | {t2i['MRR']:.3f} |" in lines[0]  # seeded: same run twice
    assert out["n_test"] == 1600 and out["split"] == "test"
    assert out["methods"]["unaligned (chance)"]["text_to_image"]["R@10"] == 10 / 1600

    res = runner.invoke(cli, [*args, "--split", "val", "--json"], env=env)
    out = json.loads(res.output)
    assert (out["n_test"], out["n_train"], out["split"]) == (1600, 4800, "val")
