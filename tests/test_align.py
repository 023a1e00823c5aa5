"""Alignment heads, loss, training, save/load and fusion, on small synthetic paired features."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from recsys.align.fusion import fuse_embeddings
from recsys.align.metrics import chance_metrics, crossmodal_metrics
from recsys.align.model import AlignmentModel, Head
from recsys.align.settings import AlignConfig
from recsys.align.train import split_train_val, train_alignment
from recsys.errors import ArtifactError

FAST = AlignConfig(
    dim=16, hidden_dim=32, epochs=12, batch_size=64, ensemble=1, patience=4, min_items=8, threads=1, warmup_epochs=1
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
    return paired(500)


@pytest.fixture(scope="module")
def trained(data: tuple[np.ndarray, np.ndarray]) -> AlignmentModel:
    text, image = data
    return train_alignment(text[:400], image[:400], FAST, text_encoder="t@1", image_encoder="i@1")


# --- loss -------------------------------------------------------------------------------------------

def test_infonce_is_log_b_for_uninformative_vectors_and_small_for_separated_ones() -> None:
    import torch

    from recsys.align.loss import symmetric_infonce

    b = 8
    same = torch.nn.functional.normalize(torch.ones(b, 4), dim=-1)
    loss = symmetric_infonce(same, same, torch.tensor(10.0))
    assert math.isclose(float(loss), math.log(b), rel_tol=1e-5)
    eye = torch.eye(b)
    assert float(symmetric_infonce(eye, eye, torch.tensor(50.0))) < 1e-6
    # Label smoothing keeps the loss of a perfect match above zero.
    assert float(symmetric_infonce(eye, eye, torch.tensor(50.0), label_smoothing=0.1)) > 0.1
    with pytest.raises(ValueError, match="same shape"):
        symmetric_infonce(eye, eye[:, :3], torch.tensor(1.0))


# --- heads ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_numpy_head_matches_torch_head(kind: str) -> None:
    import torch

    from recsys.align.heads import ProjectionHead

    torch.manual_seed(0)
    head = ProjectionHead(10, 6, kind=kind, hidden_dim=12, dropout=0.3).eval()
    with torch.no_grad():  # make the MLP branch matter
        for p in head.parameters():
            p.normal_()
    x = np.random.default_rng(0).normal(size=(5, 10)).astype(np.float32)
    mean, scale = np.full(10, 0.1, np.float32), np.full(10, 2.0, np.float32)
    with torch.inference_mode():
        expected = head(torch.from_numpy((x - mean) / scale)).numpy()
    got = head.to_numpy(mean, scale)(x)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_head_rejects_wrong_input_width() -> None:
    head = Head("linear", np.zeros(3, np.float32), np.ones(3, np.float32),
                {"W": np.eye(3, dtype=np.float32), "b": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        head(np.zeros((2, 4), np.float32))
    with pytest.raises(ArtifactError, match="missing"):
        Head("mlp", head.mean, head.scale, head.params)


# --- training ---------------------------------------------------------------------------------------

def test_training_lowers_the_loss_and_beats_chance_on_held_out_pairs(
    trained: AlignmentModel, data: tuple[np.ndarray, np.ndarray]
) -> None:
    history = trained.metrics["members"][0]["history"]
    assert history[-1]["loss"] < 0.8 * history[0]["loss"]
    text, image = data
    held_out = crossmodal_metrics(trained.project_text(text[400:]), trained.project_image(image[400:]))
    chance = chance_metrics(100)
    for direction in ("text_to_image", "image_to_text"):
        assert held_out[direction]["R@10"] > 4 * chance["R@10"]
        assert held_out[direction]["MRR"] > 4 * chance["MRR"]
    assert trained.metrics["n_train"] + trained.metrics["n_val"] == 400
    assert trained.dim == 16 and trained.text_dim == 24 and trained.image_dim == 40


def test_training_is_seeded(data: tuple[np.ndarray, np.ndarray], trained: AlignmentModel) -> None:
    text, image = data
    again = train_alignment(text[:400], image[:400], FAST, text_encoder="t@1", image_encoder="i@1")
    assert again.version == trained.version
    np.testing.assert_array_equal(again.project_text(text[400:]), trained.project_text(text[400:]))
    other = train_alignment(text[:400], image[:400], FAST.model_copy(update={"seed": 1}))
    assert not np.array_equal(other.text_heads[0].params["W"], trained.text_heads[0].params["W"])


def test_ensemble_concatenates_members_so_the_dot_product_is_their_mean_cosine(
    data: tuple[np.ndarray, np.ndarray]
) -> None:
    text, image = data
    cfg = FAST.model_copy(update={"ensemble": 2, "epochs": 3, "head": "linear"})
    model = train_alignment(text[:200], image[:200], cfg)
    assert model.dim == 2 * cfg.dim and len(model.metrics["members"]) == 2
    t, i = model.project_text(text[:5]), model.project_image(image[:5])
    members = [(h_t(text[:5]) * h_i(image[:5])).sum(axis=1) for h_t, h_i in zip(model.text_heads, model.image_heads)]
    np.testing.assert_allclose((t * i).sum(axis=1), np.mean(members, axis=0), atol=1e-5)


def test_early_stopping_keeps_the_best_epoch(data: tuple[np.ndarray, np.ndarray]) -> None:
    text, image = data
    cfg = FAST.model_copy(update={"epochs": 40, "patience": 2, "lr": 3e-2, "schedule": "constant"})
    report = train_alignment(text[:200], image[:200], cfg).metrics["members"][0]
    scores = [row["val_mrr"] for row in report["history"]]
    assert report["best_val_mrr"] == max(scores)
    assert report["best_epoch"] == scores.index(max(scores)) + 1
    assert report["epochs_run"] == report["best_epoch"] + cfg.patience < cfg.epochs  # it did stop early


def test_text_views_replace_texts_only_where_given(data: tuple[np.ndarray, np.ndarray], trained: AlignmentModel) -> None:
    text, image = data
    cfg = FAST.model_copy(update={"text_view_prob": 1.0})

    def weights(model: AlignmentModel) -> np.ndarray:
        return model.text_heads[0].params["W"]

    # Views equal to the texts, or missing (NaN) everywhere: exactly the training without views.
    same = train_alignment(text[:400], image[:400], cfg, text_encoder="t@1", image_encoder="i@1", text_views=text[:400])
    np.testing.assert_array_equal(weights(same), weights(trained))
    none = train_alignment(text[:400], image[:400], cfg, text_encoder="t@1", image_encoder="i@1",
                           text_views=np.full_like(text[:400], np.nan))
    np.testing.assert_array_equal(weights(none), weights(trained))
    # Real views change the training; probability 0 ignores them.
    other = paired(400, seed=9)[0]
    assert not np.array_equal(weights(train_alignment(text[:400], image[:400], cfg, text_views=other)), weights(trained))
    off = train_alignment(text[:400], image[:400], FAST, text_encoder="t@1", image_encoder="i@1", text_views=other)
    np.testing.assert_array_equal(weights(off), weights(trained))
    with pytest.raises(ValueError, match="text_views"):
        train_alignment(text[:400], image[:400], cfg, text_views=text[:10])


def test_training_validates_its_inputs() -> None:
    text, image = paired(20)
    with pytest.raises(ValueError, match="min_items"):
        train_alignment(text[:5], image[:5], FAST)
    with pytest.raises(ValueError, match="same n"):
        train_alignment(text, image[:10], FAST)
    bad = text.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        train_alignment(bad, image, FAST)


def test_split_is_seeded_and_disjoint() -> None:
    tr, va = split_train_val(100, 0.1, seed=3)
    assert len(va) == 10 and len(tr) == 90 and not set(tr) & set(va)
    np.testing.assert_array_equal(split_train_val(100, 0.1, seed=3)[1], va)


def test_config_rejects_zero_fusion_weights() -> None:
    with pytest.raises(ValueError, match="fusion"):
        AlignConfig(fusion_text_weight=0, fusion_image_weight=0)


# --- save / load ------------------------------------------------------------------------------------

def test_save_load_round_trip_gives_identical_outputs(
    trained: AlignmentModel, data: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    text, image = data
    trained.save(tmp_path / "m")
    loaded = AlignmentModel.load(tmp_path / "m")
    assert loaded.version == trained.version
    assert loaded.text_encoder == "t@1" and loaded.image_encoder == "i@1"
    assert loaded.config == FAST.model_dump(mode="json")
    assert AlignConfig.model_validate(loaded.config) == FAST
    assert loaded.metrics["val"] == trained.metrics["val"]
    np.testing.assert_array_equal(loaded.project_text(text), trained.project_text(text))
    np.testing.assert_array_equal(loaded.project_image(image), trained.project_image(image))


def test_load_refuses_missing_or_tampered_artifacts(trained: AlignmentModel, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="cannot read"):
        AlignmentModel.load(tmp_path / "nothing")
    d = trained.save(tmp_path / "m")
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["version"] = "mlp-16x1-000000000000"
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="do not match"):
        AlignmentModel.load(d)
    manifest["kind"] = "cf"
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="align manifest"):
        AlignmentModel.load(d)


# --- fusion -----------------------------------------------------------------------------------------

def test_fusion_weights_and_fallbacks() -> None:
    text = np.array([[1, 0], [1, 0], [1, 0], [0, 0]], np.float32)
    image = np.array([[0, 1], [0, 3], [0, 1], [0, 1]], np.float32)
    has_image = np.array([True, False, True, True])
    has_text = np.array([True, True, True, False])
    fused = fuse_embeddings(text, image, has_image, text_weight=0.75, image_weight=0.25, has_text=has_text)
    expected0 = np.array([0.75, 0.25]) / np.hypot(0.75, 0.25)
    np.testing.assert_allclose(fused[0], expected0, atol=1e-6)
    np.testing.assert_allclose(fused[1], [1, 0], atol=1e-6)  # no image: the text vector alone
    np.testing.assert_allclose(fused[3], [0, 1], atol=1e-6)  # no text: the image vector alone
    np.testing.assert_allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-6)
    # An item with one modality uses it even when that modality's weight is 0.
    only_image = fuse_embeddings(text, image, has_image, text_weight=0.0, image_weight=1.0)
    np.testing.assert_allclose(only_image[1], [1, 0], atol=1e-6)
    neither = fuse_embeddings(text[:1], image[:1], np.array([False]), has_text=np.array([False]))
    np.testing.assert_array_equal(neither, np.zeros((1, 2), np.float32))


def test_fusion_rejects_bad_arguments() -> None:
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="same shape"):
        fuse_embeddings(x, x[:, :2])
    with pytest.raises(ValueError, match="not both 0"):
        fuse_embeddings(x, x, text_weight=0, image_weight=0)
    with pytest.raises(ValueError, match=r"\(2,\)"):
        fuse_embeddings(x, x, has_image=np.array([True]))
