"""Training budget of the alignment (issue 14): early-stopping records, CPU time, bfloat16 training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recsys.align.model import AlignmentModel
from recsys.align.settings import AlignConfig
from recsys.align.train import resolve_precision, split_train_val, train_alignment
from recsys.evaluation.crossmodal import chance_metrics, crossmodal_metrics

FAST = AlignConfig(
    dim=16, hidden_dim=32, epochs=12, batch_size=64, ensemble=1, patience=4, min_items=8, threads=1, warmup_epochs=1,
    precision="float32",
)


def paired(n: int, seed: int = 0, noise: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """Text and image features driven by one shared latent, through different (one non-linear) maps."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 6))
    maps = np.random.default_rng(100)
    text = z @ maps.normal(size=(6, 24)) + noise * rng.normal(size=(n, 24))
    image = np.tanh(z @ maps.normal(size=(6, 40))) + noise * rng.normal(size=(n, 40))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    return text.astype(np.float32), image.astype(np.float32)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return paired(400)


def _held_out_r10(model: AlignmentModel, text: np.ndarray, image: np.ndarray) -> float:
    return crossmodal_metrics(model.project_text(text), model.project_image(image))["text_to_image"]["R@10"]


def test_metrics_record_where_each_member_stopped_and_why(data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    text, image = data
    # A high constant learning rate overfits these 180 pairs fast: patience 2 must stop well before 40 epochs.
    stops = FAST.model_copy(update={"epochs": 40, "patience": 2, "lr": 3e-2, "schedule": "constant", "ensemble": 2})
    model = train_alignment(text[:200], image[:200], stops)
    m = model.metrics
    assert m["best_epochs"] == [r["best_epoch"] for r in m["members"]]
    assert m["epochs_run"] == [len(r["history"]) for r in m["members"]]
    assert m["stopped_early"] == [True, True]
    for r in m["members"]:
        assert r["epochs_run"] == r["best_epoch"] + stops.patience < stops.epochs
        assert r["best_val_mrr"] == max(row["val_mrr"] for row in r["history"])
    assert m["val_score"] == pytest.approx(np.mean([m["val"][d]["MRR"] for d in ("text_to_image", "image_to_text")]))
    assert m["train_cpu_seconds"] > 0 and m["threads"] == 1
    # Enough patience: every epoch runs and nothing is marked as stopped early.
    full = train_alignment(text[:200], image[:200], FAST.model_copy(update={"epochs": 5, "patience": 5}))
    assert full.metrics["epochs_run"] == [5] and full.metrics["stopped_early"] == [False]
    # The manifest keeps the records.
    manifest = json.loads((model.save(tmp_path / "m") / "manifest.json").read_text())
    for key in ("best_epochs", "epochs_run", "stopped_early", "val_score", "train_cpu_seconds", "threads"):
        assert manifest["metrics"][key] == m[key]


def test_bfloat16_training_changes_the_weights_but_still_learns(data: tuple[np.ndarray, np.ndarray]) -> None:
    text, image = data
    fp32 = train_alignment(text[:300], image[:300], FAST)
    bf16 = train_alignment(text[:300], image[:300], FAST.model_copy(update={"precision": "bfloat16"}))
    w32, w16 = fp32.text_heads[0].params["W1"], bf16.text_heads[0].params["W1"]
    assert w16.dtype == np.float32  # the model stays float32
    assert not np.array_equal(w16, w32)  # the forward pass really ran in bfloat16
    assert bf16.config["precision"] == "bfloat16" and bf16.metrics["precision"] == "bfloat16"
    assert fp32.metrics["precision"] == "float32"
    chance = chance_metrics(100)["R@10"]
    r32, r16 = _held_out_r10(fp32, text[300:], image[300:]), _held_out_r10(bf16, text[300:], image[300:])
    assert r16 > 4 * chance and r16 > r32 - 0.1
    again = train_alignment(text[:300], image[:300], FAST.model_copy(update={"precision": "bfloat16"}))
    assert again.version == bf16.version  # seeded, like float32


def test_auto_precision_follows_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    assert resolve_precision("float32") == "float32" and resolve_precision("bfloat16") == "bfloat16"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert resolve_precision("auto") == "bfloat16"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert resolve_precision("auto") == "float32"
    text, image = paired(60)
    model = train_alignment(text, image, FAST.model_copy(update={"precision": "auto", "epochs": 1}))
    assert model.metrics["precision"] == "float32" and model.config["precision"] == "auto"


def test_config_rejects_an_unknown_precision() -> None:
    with pytest.raises(ValueError, match="precision"):
        AlignConfig(precision="float16")  # type: ignore[arg-type]


def test_held_out_share_is_capped_and_the_rest_trains() -> None:
    tr, va = split_train_val(1000, 0.1, seed=3, max_val=40)
    assert len(va) == 40 and len(tr) == 960 and not set(tr) & set(va)
    assert len(split_train_val(1000, 0.1, seed=3, max_val=500)[1]) == 100  # the cap only lowers the share
    text, image = paired(200)
    model = train_alignment(text, image, FAST.model_copy(update={"epochs": 1, "val_fraction": 0.2, "max_val_items": 15}))
    assert model.metrics["n_val"] == 15 and model.metrics["n_train"] == 185
