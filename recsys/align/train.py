"""Training of the alignment heads: a pure function of paired ``(text, image)`` feature arrays.

The encoders stay frozen: their vectors are inputs here. A share of the items (``val_fraction``, at
most ``max_val_items``) is held out for early stopping; the other items train the heads with a symmetric
InfoNCE loss (learnable temperature, AdamW, optional cosine schedule, forward pass optionally in
bfloat16, optional exponential moving average of the weights). The image features may be reduced to
their top principal axes (fitted on the training rows) before the image head; that linear map is folded
into the saved head's first layer, so a saved model takes the encoder's full-width vectors. Each ensemble member is trained independently from its own seed on the same split. Everything is seeded: equal inputs and config give equal weights.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from recsys.align.metrics import crossmodal_metrics, mean_score
from recsys.align.model import AlignmentModel
from recsys.align.settings import AlignConfig

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, int, dict[str, float]], None]
"""Called after each epoch with ``(member, epoch, {"loss": ..., "val_mrr": ..., "logit_scale": ...})``."""


@dataclass(frozen=True)
class Standardizer:
    """Per-dimension centring and scaling fitted on the training rows."""

    mean: np.ndarray
    """``(d,)`` float32."""
    scale: np.ndarray
    """``(d,)`` float32, > 0."""

    @classmethod
    def fit(cls, x: np.ndarray, enabled: bool = True) -> Standardizer:
        d = x.shape[1]
        if not enabled:
            return cls(np.zeros(d, np.float32), np.ones(d, np.float32))
        mean = x.mean(axis=0).astype(np.float32)
        std = x.std(axis=0).astype(np.float32)
        floor = np.float32(max(float(np.median(std)) * 1e-2, 1e-6))
        return cls(mean, np.maximum(std, floor))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale).astype(np.float32)


def principal_axes(z: np.ndarray, k: int) -> np.ndarray:
    """``(d, k)`` float32: the top-``k`` principal axes (unit columns) of the rows of ``z`` ``(n, d)``.

    ``z`` is expected centred (standardised training features are); the axes are the eigenvectors of
    ``zᵀz`` with the largest eigenvalues, largest first, each signed so that its largest entry is positive
    (deterministic).
    """
    d = z.shape[1]
    if not 0 < k <= d:
        raise ValueError(f"the number of principal axes must be in [1, {d}], got {k}")
    z64 = np.asarray(z, dtype=np.float64)
    _, vecs = np.linalg.eigh(z64.T @ z64)  # ascending eigenvalues
    axes = vecs[:, ::-1][:, :k]
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(k)])
    return (axes * signs).astype(np.float32)


def split_train_val(
    n: int, val_fraction: float, seed: int, max_val: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``range(n)`` into ``(train_rows, val_rows)``; at least one row on each side.

    ``val_fraction`` of the rows are held out, at most ``max_val`` of them (the rest train).
    """
    if n < 2:
        raise ValueError(f"need at least 2 items to split, got {n}")
    n_val = max(1, round(val_fraction * n))
    n_val = min(n_val if max_val is None else min(n_val, max_val), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _check_inputs(text: np.ndarray, image: np.ndarray, config: AlignConfig) -> tuple[np.ndarray, np.ndarray]:
    text = np.asarray(text, dtype=np.float32)
    image = np.asarray(image, dtype=np.float32)
    if text.ndim != 2 or image.ndim != 2 or len(text) != len(image):
        raise ValueError(
            f"text and image must be (n, d_text) and (n, d_image) with the same n, got {text.shape} and {image.shape}"
        )
    if len(text) < config.min_items:
        raise ValueError(f"need at least min_items={config.min_items} paired items to train, got {len(text)}")
    if not (np.isfinite(text).all() and np.isfinite(image).all()):
        raise ValueError("text and image features must be finite (no NaN or inf)")
    return text, image


def _lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def resolve_precision(precision: str) -> str:
    """``auto`` → ``bfloat16`` when oneDNN runs bfloat16 natively on this CPU, else ``float32``."""
    if precision != "auto":
        return precision
    import torch

    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # an older or differently built torch: be safe
        native = False
    return "bfloat16" if native else "float32"


def _train_member(
    xt: np.ndarray,
    xi: np.ndarray,
    vt: np.ndarray,
    vi: np.ndarray,
    config: AlignConfig,
    seed: int,
    member: int,
    on_epoch: EpochCallback | None,
    views: np.ndarray | None = None,
) -> tuple[Any, Any, float, dict[str, Any]]:
    """Train one (text head, image head) pair; returns the best epoch's heads, logit scale and a report."""
    import torch

    from recsys.align.heads import ProjectionHead
    from recsys.align.loss import symmetric_infonce

    torch.manual_seed(seed)
    heads = [
        ProjectionHead(x.shape[1], config.dim, config.head, config.hidden_dim, config.dropout) for x in (xt, xi)
    ]
    log_scale = torch.nn.Parameter(
        torch.tensor(math.log(1.0 / config.temperature_init)), requires_grad=config.learn_temperature
    )
    params = [p for h in heads for p in h.parameters()]
    optim = torch.optim.AdamW(
        [{"params": params, "weight_decay": config.weight_decay}, {"params": [log_scale], "weight_decay": 0.0}],
        lr=config.lr,
        fused=True,  # one kernel per step: 6x cheaper than the default multi-tensor AdamW on one CPU thread
    )
    n = len(xt)
    bs = min(config.batch_size, n)
    steps_per_epoch = n // bs if n > bs else 1
    total = steps_per_epoch * config.epochs
    warmup = steps_per_epoch * config.warmup_epochs
    gen = torch.Generator().manual_seed(seed)
    tt, ti = torch.from_numpy(xt), torch.from_numpy(xi)
    vtt, vit = torch.from_numpy(vt), torch.from_numpy(vi)
    if views is not None and config.text_view_prob > 0:
        has_view = torch.from_numpy(np.isfinite(views).all(axis=1))
        tviews = torch.from_numpy(np.nan_to_num(views))
    else:
        has_view = tviews = None
    view_gen = torch.Generator().manual_seed(seed + 7919)  # its own stream: views never change the batches
    max_log = math.log(config.max_logit_scale)
    bf16 = resolve_precision(config.precision) == "bfloat16"
    # Validation, early stopping and the returned weights use the exponential moving average of the
    # weights when ``ema_decay`` > 0 (updated after every optimiser step), else the weights themselves.
    ema = None
    if config.ema_decay > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        live = torch.nn.ModuleList(heads)
        ema = AveragedModel(live, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
    evaluated = list(ema.module) if ema is not None else heads

    best_score, best_epoch, best_scale = -math.inf, 0, 0.0
    best_states: list[dict[str, Any]] = []
    history: list[dict[str, float]] = []
    step = 0
    for epoch in range(config.epochs):
        for h in heads:
            h.train()
        perm = torch.randperm(n, generator=gen)
        losses = []
        for b in range(steps_per_epoch):
            idx = perm[b * bs : (b + 1) * bs]
            for group in optim.param_groups:
                group["lr"] = config.lr * _lr_factor(step, total, warmup, config.schedule)
            scale = log_scale.clamp(max=max_log).exp()
            xb = tt[idx]
            if tviews is not None and has_view is not None:
                swap = (torch.rand(len(idx), generator=view_gen) < config.text_view_prob) & has_view[idx]
                xb = torch.where(swap[:, None], tviews[idx], xb)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                zt, zi = heads[0](xb), heads[1](ti[idx])
            loss = symmetric_infonce(zt.float(), zi.float(), scale, config.label_smoothing)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            if ema is not None:
                ema.update_parameters(live)
            losses.append(float(loss.detach()))
            step += 1
        for h in evaluated:
            h.eval()
        with torch.inference_mode():
            val = crossmodal_metrics(evaluated[0](vtt).numpy(), evaluated[1](vit).numpy())
        score = mean_score(val, "MRR")
        scale_now = float(log_scale.detach().clamp(max=max_log).exp())
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_mrr": score, "logit_scale": scale_now}
        history.append(row)
        if on_epoch is not None:
            on_epoch(member, epoch + 1, row)
        log.debug("member %d epoch %d: loss %.4f, val MRR %.4f", member, epoch + 1, row["loss"], score)
        if score > best_score:
            best_score, best_epoch, best_scale = score, epoch + 1, scale_now
            best_states = [copy.deepcopy(h.state_dict()) for h in evaluated]
        elif epoch + 1 - best_epoch >= config.patience:
            break
    for h, state in zip(heads, best_states):
        h.load_state_dict(state)
        h.eval()
    report = {
        "seed": seed,
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "stopped_early": len(history) < config.epochs,
        "best_val_mrr": best_score,
        "logit_scale": best_scale,
        "history": history,
    }
    return heads[0], heads[1], best_scale, report


def train_alignment(
    text: np.ndarray,
    image: np.ndarray,
    config: AlignConfig | None = None,
    *,
    text_encoder: str = "",
    image_encoder: str = "",
    on_epoch: EpochCallback | None = None,
    text_views: np.ndarray | None = None,
) -> AlignmentModel:
    """Learn text and image projection heads into one joint space.

    Args:
        text: ``(n, d_text)`` float32 frozen text-encoder vectors; row ``i`` describes item ``i``.
        image: ``(n, d_image)`` float32 frozen image-encoder vectors of the same items.
        config: hyper-parameters (default :class:`AlignConfig()`).
        text_encoder / image_encoder: encoder versions, recorded in the model.
        on_epoch: progress callback.
        text_views: ``(n, d_text)`` other text vectors of the same items (e.g. of the title alone; a row
            of NaN where an item has none). While training, each item's text is replaced by its view
            with probability ``text_view_prob``. Validation uses ``text`` only.

    Returns:
        The trained :class:`AlignmentModel`; ``metrics`` holds the split sizes, each member's epochs run,
        best epoch, whether it stopped early and validation history, the ensemble's validation metrics and
        score (mean MRR of both directions), the wall and CPU seconds of training, threads and precision.

    Raises:
        ValueError: shapes disagree, fewer than ``min_items`` pairs, or non-finite features.
    """
    import torch

    config = config or AlignConfig()
    text, image = _check_inputs(text, image, config)
    started, cpu_started = time.perf_counter(), time.process_time()
    tr, va = split_train_val(len(text), config.val_fraction, config.seed, config.max_val_items)
    st = Standardizer.fit(text[tr], config.standardize)
    si = Standardizer.fit(image[tr], config.standardize)
    xt, xi, vt, vi = st(text[tr]), si(image[tr]), st(text[va]), si(image[va])
    basis = None
    if config.image_pca_dim and config.image_pca_dim < image.shape[1]:
        basis = principal_axes(xi, config.image_pca_dim)
        xi, vi = xi @ basis, vi @ basis
    views = None
    if text_views is not None:
        text_views = np.asarray(text_views, dtype=np.float32)
        if text_views.shape != text.shape:
            raise ValueError(f"text_views must have the shape of text {text.shape}, got {text_views.shape}")
        views = st(text_views[tr])

    old_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    threads = torch.get_num_threads()
    # numpy's BLAS (the per-epoch validation ranking) gets the same thread budget as torch: its idle
    # worker threads spinning between the small products cost ~30% more CPU seconds at equal wall time.
    blas = threadpool_limits(limits=config.threads, user_api="blas") if config.threads else nullcontext()
    try:
        with blas:
            members = [
                _train_member(xt, xi, vt, vi, config, config.seed + m, m, on_epoch, views)
                for m in range(config.ensemble)
            ]
    finally:
        torch.set_num_threads(old_threads)

    model = AlignmentModel(
        text_heads=tuple(m[0].to_numpy(st.mean, st.scale) for m in members),
        image_heads=tuple(m[1].to_numpy(si.mean, si.scale, basis) for m in members),
        logit_scales=tuple(m[2] for m in members),
        text_encoder=text_encoder,
        image_encoder=image_encoder,
        config=config.model_dump(mode="json"),
    )
    val = crossmodal_metrics(model.project_text(text[va]), model.project_image(image[va]))
    reports = [m[3] for m in members]
    metrics = {
        "n_train": int(len(tr)),
        "n_val": int(len(va)),
        "val": val,
        "val_score": mean_score(val, "MRR"),
        "best_epochs": [r["best_epoch"] for r in reports],
        "epochs_run": [r["epochs_run"] for r in reports],
        "stopped_early": [r["stopped_early"] for r in reports],
        "members": reports,
        "threads": threads,
        "precision": resolve_precision(config.precision),
        "image_input_dim": int(xi.shape[1]),
        "train_seconds": round(time.perf_counter() - started, 2),
        "train_cpu_seconds": round(time.process_time() - cpu_started, 2),
    }
    log.info(
        "alignment trained on %d pairs (val %d) in %.1fs (%.1f CPU-s, epochs run %s, best %s): "
        "val text→image R@10 %.3f, MRR %.3f",
        len(tr), len(va), metrics["train_seconds"], metrics["train_cpu_seconds"], metrics["epochs_run"],
        metrics["best_epochs"], val["text_to_image"]["R@10"], val["text_to_image"]["MRR"],
    )
    return replace(model, metrics=metrics)
