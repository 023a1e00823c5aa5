"""Cheaper alignment training (issue 14): weight averaging (EMA) and principal axes of the image input."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.align.model import AlignmentModel
from recsys.align.settings import AlignConfig
from recsys.align.train import Standardizer, principal_axes, split_train_val, train_alignment
from recsys.evaluation.crossmodal import chance_metrics, crossmodal_metrics
from tests.test_align_budget import FAST, paired


def _held_out_r10(model: AlignmentModel, text: np.ndarray, image: np.ndarray) -> float:
    return crossmodal_metrics(model.project_text(text), model.project_image(image))["text_to_image"]["R@10"]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return paired(400)


def test_principal_axes_are_orthonormal_and_span_the_top_variance() -> None:
    rng = np.random.default_rng(0)
    # Variance concentrated on 3 known directions of a 12-d space, plus a little noise.
    basis = np.linalg.qr(rng.normal(size=(12, 3)))[0]
    z = (rng.normal(size=(500, 3)) * [5.0, 3.0, 2.0]) @ basis.T + 0.01 * rng.normal(size=(500, 12))
    z -= z.mean(axis=0)
    axes = principal_axes(z.astype(np.float32), 3)
    assert axes.shape == (12, 3) and axes.dtype == np.float32
    np.testing.assert_allclose(axes.T @ axes, np.eye(3), atol=1e-5)
    # Same subspace as the planted one (projector distance), and the first axis is the largest direction.
    np.testing.assert_allclose(axes @ axes.T, basis @ basis.T, atol=1e-3)
    assert abs(float(axes[:, 0] @ basis[:, 0])) > 0.999
    # Oracle: the right singular vectors of the data, up to sign.
    vt = np.linalg.svd(z, full_matrices=False)[2][:3].T
    np.testing.assert_allclose(np.abs(axes.T @ vt), np.eye(3), atol=1e-3)
    with pytest.raises(ValueError, match=r"\[1, 12\]"):
        principal_axes(z, 13)
    with pytest.raises(ValueError, match=r"\[1, 12\]"):
        principal_axes(z, 0)


def test_image_pca_is_folded_into_the_saved_head(data: tuple[np.ndarray, np.ndarray], tmp_path) -> None:  # type: ignore[no-untyped-def]
    import torch

    text, image = data
    cfg = FAST.model_copy(update={"image_pca_dim": 8})
    model = train_alignment(text[:300], image[:300], cfg)
    assert model.image_dim == image.shape[1] == 40  # the saved head takes the encoder's full-width vectors
    assert model.metrics["image_input_dim"] == 8
    # The fold is exact: torch's head on the projected features gives the numpy head's output. Rebuild the
    # training's standardiser and axes (seeded split) and a torch head holding the unfolded weights.
    tr, _ = split_train_val(300, cfg.val_fraction, cfg.seed, cfg.max_val_items)
    si = Standardizer.fit(image[:300][tr])
    axes = principal_axes(si(image[:300][tr]), 8)
    head = model.image_heads[0]
    unfolded_w = np.linalg.lstsq(axes, head.params["W"], rcond=None)[0]  # (8, dim): axes are orthonormal
    unfolded_w1 = np.linalg.lstsq(axes, head.params["W1"], rcond=None)[0]
    np.testing.assert_allclose(axes @ unfolded_w, head.params["W"], atol=1e-5)  # W lies in the axes' span
    z = si(image[300:]) @ axes
    h = z @ unfolded_w + head.params["b"]
    h = h + torch.nn.functional.gelu(torch.from_numpy(z @ unfolded_w1 + head.params["b1"]), approximate="tanh").numpy() @ head.params["W2"] + head.params["b2"]
    np.testing.assert_allclose(model.project_image(image[300:]), h / np.linalg.norm(h, axis=1, keepdims=True), atol=1e-4)
    # It learns, and a save/load round trip projects identically.
    assert _held_out_r10(model, text[300:], image[300:]) > 4 * chance_metrics(100)["R@10"]
    loaded = AlignmentModel.load(model.save(tmp_path / "pca"))
    assert loaded.version == model.version and loaded.config["image_pca_dim"] == 8
    np.testing.assert_array_equal(loaded.project_image(image[300:]), model.project_image(image[300:]))
    np.testing.assert_array_equal(loaded.project_text(text[300:]), model.project_text(text[300:]))
    # Off (0, or at least the feature width) trains on the full width: same weights as before the option.
    plain = train_alignment(text[:300], image[:300], FAST)
    assert train_alignment(text[:300], image[:300], FAST.model_copy(update={"image_pca_dim": 40})).version == plain.version
    assert plain.metrics["image_input_dim"] == 40 and plain.version != model.version


def test_ema_changes_the_kept_weights_still_learns_and_is_seeded(data: tuple[np.ndarray, np.ndarray]) -> None:
    text, image = data
    plain = train_alignment(text[:300], image[:300], FAST)
    ema_cfg = FAST.model_copy(update={"ema_decay": 0.9})
    ema = train_alignment(text[:300], image[:300], ema_cfg)
    assert ema.version != plain.version  # the average, not the last or best raw weights, is kept
    assert ema.config["ema_decay"] == 0.9
    assert _held_out_r10(ema, text[300:], image[300:]) > 4 * chance_metrics(100)["R@10"]
    assert train_alignment(text[:300], image[:300], ema_cfg).version == ema.version
    # Early stopping scores the averaged weights: the best epoch's recorded score is the kept model's.
    member = ema.metrics["members"][0]
    assert member["best_val_mrr"] == pytest.approx(ema.metrics["val_score"], abs=1e-4)


def test_ema_of_a_single_step_is_the_trained_weights(data: tuple[np.ndarray, np.ndarray]) -> None:
    # One optimiser step: the first EMA update copies the weights, so any decay gives the plain model.
    text, image = data
    one = FAST.model_copy(update={"epochs": 1, "batch_size": 512, "warmup_epochs": 0})
    plain = train_alignment(text[:300], image[:300], one)
    ema = train_alignment(text[:300], image[:300], one.model_copy(update={"ema_decay": 0.5}))
    assert plain.metrics["members"][0]["epochs_run"] == 1
    for a, b in zip((*plain.text_heads, *plain.image_heads), (*ema.text_heads, *ema.image_heads)):
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k])


def test_config_bounds_of_the_new_options() -> None:
    with pytest.raises(ValueError, match="ema_decay"):
        AlignConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="image_pca_dim"):
        AlignConfig(image_pca_dim=-1)


def test_dropout_keeps_one_minus_p_of_the_entries_scaled_and_is_off_in_eval() -> None:
    import torch

    from recsys.align.heads import dropout

    torch.manual_seed(0)
    x = torch.ones(400, 500)
    y = dropout(x, 0.4, training=True)
    kept = y != 0
    assert abs(float(kept.float().mean()) - 0.6) < 0.01  # 200,000 draws: the keep rate is 1 - p
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.6))  # inverted dropout: mean preserved
    assert dropout(x, 0.4, training=False) is x and dropout(x, 0.0, training=True) is x
    # Gradients flow through the kept entries only, and bfloat16 inputs stay bfloat16.
    w = torch.ones(3, 4, requires_grad=True)
    dropout(w, 0.5, training=True).sum().backward()
    assert w.grad is not None and set(torch.unique(w.grad).tolist()) <= {0.0, 2.0}
    assert dropout(x.to(torch.bfloat16), 0.4, training=True).dtype == torch.bfloat16


def test_numpy_blas_gets_the_torch_thread_budget_while_training(data: tuple[np.ndarray, np.ndarray]) -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    text, image = data
    seen: list[set[int]] = []

    def blas_threads() -> set[int]:
        return {int(p["num_threads"]) for p in threadpool_info() if p["user_api"] == "blas"}

    with threadpool_limits(limits=2, user_api="blas"):  # as on a 2-core machine, whatever this one has
        before = blas_threads()
        model = train_alignment(text[:200], image[:200], FAST.model_copy(update={"epochs": 2}),
                                on_epoch=lambda *_: seen.append(blas_threads()))
        assert blas_threads() == before  # restored afterwards
    if not before:
        pytest.skip("numpy reports no BLAS thread pool here")
    assert seen and all(s == {1} for s in seen)  # threads: 1 → one BLAS thread during training
    assert model.metrics["threads"] == 1
