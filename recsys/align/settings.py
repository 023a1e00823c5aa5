"""Configuration section ``align`` (see :mod:`recsys.config`). Pure pydantic, no heavy imports."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from recsys.settings_base import Section as _Section


class AlignConfig(_Section):
    """Contrastive alignment of frozen text and image embeddings (CLIP-style projection heads).

    The defaults were chosen on a validation split carved from the 6,400 training items of the H&M
    cross-modal protocol (never on its 1,600 test items); see ``recsys evaluate-search --split val``. The
    training budget (two members, 60 epochs, bfloat16, one thread) was chosen there in issue 14 for CPU
    cost: text→image R@10 on that split, with the CPU seconds of training on its 4,800 items (2-core machine
    shared with other jobs): 2 × MLP-1024, 60 epochs, bfloat16: 0.696 in 88 s; 1 × MLP-1024, 60 epochs,
    bfloat16: 0.689 in 47 s; 2 × MLP-512, 60 epochs: 0.679 in 57 s; 1 × MLP-512, 60 epochs: 0.674 in 33 s;
    1 × MLP-1024, 30 epochs: 0.653 in 33 s (float32) / 24 s (bfloat16); 3 × MLP-512, 20 epochs: 0.648 in 33 s. The previous defaults (3 members,
    2 threads) were reported at 0.698 there and cost ~25 CPU-minutes on the 8,000 items.

    Second cut (issue 14, 3-CPU-minute target; ``benchmarks/align_candidates.py``, same split, same R@10, CPU s
    on its 4,800 items; rows of one batch ran back to back, load average 0.7 to 4.5 on the 2 shared cores):
    the defaults before (2 × MLP-1024, 60 epochs): 0.6975 in 78.8 s (91.8 s in the batch at load 4). With the
    training code's fused AdamW and cheaper dropout mask (same settings, ~30% less CPU per member-epoch):
    60 epochs 0.682 in 40.1 s (one member stopped early at epoch 35); **50 epochs 0.6925 in 45.7 s** (adopted:
    the cheapest candidate within 0.005 of the defaults before, -42% CPU; the same with seed 1: 0.688 in
    30.5 s, so single runs vary by about ±0.01); 40 epochs 0.691 in 38.5 s; image PCA 512: 0.658 in 50.2 s.
    On the code before: 2 × MLP-1024 with image PCA 256: 0.679 in 58.3 s; 1 member with EMA 0.98: 0.688 in
    44.6 s; 1 member, EMA 0.98, image PCA 256: 0.665 in 28.9 s; 1 member, image PCA 256: 0.663 in 27.4 s.
    """

    dim: int = Field(256, gt=0)
    """Joint-space dimension of one head (an ensemble of ``ensemble`` members concatenates them)."""
    head: Literal["linear", "mlp"] = "mlp"
    """``linear``: one linear map per side; ``mlp``: a residual two-layer MLP per side."""
    hidden_dim: int = Field(1024, gt=0)
    """Width of the MLP's hidden layer (``head: mlp`` only)."""
    dropout: float = Field(0.4, ge=0.0, lt=1.0)
    """Dropout on the MLP's hidden layer and on the input features during training."""
    standardize: bool = True
    """Centre and scale the input features with statistics of the training items (stored in the model)."""
    epochs: int = Field(50, gt=0)
    """Length of the (cosine) schedule: the training budget. Early stopping may end it before. 50 since the
    second cut of issue 14 (60 before; see the class docstring)."""
    batch_size: int = Field(512, gt=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    schedule: Literal["constant", "cosine"] = "cosine"
    warmup_epochs: int = Field(2, ge=0)
    temperature_init: float = Field(0.07, gt=0)
    """Initial softmax temperature; learnt (as a log logit scale) when ``learn_temperature``."""
    learn_temperature: bool = True
    max_logit_scale: float = Field(100.0, gt=1)
    """Clamp of the learnt logit scale (1 / temperature), as in CLIP."""
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    text_view_prob: float = Field(0.0, ge=0.0, le=1.0)
    """Probability of training on an item's short text view (its title and category) instead of its full
    text. Helps short free-text queries but cost full-text retrieval on the H&M validation split
    (text→image R@10 0.698 → 0.645 at 0.3, while R@10 of title queries rose 0.365 → 0.451), hence 0."""
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    """Share of the training items held out for early stopping."""
    max_val_items: int = Field(2000, gt=0)
    """At most this many items are held out (the rest train): each epoch's validation ranks every held-out
    item against every other, a cost quadratic in their number, and 2,000 give a stable score."""
    patience: int = Field(10, gt=0)
    """Stop after this many epochs without a better validation score; the best epoch's weights are kept."""
    ensemble: int = Field(2, gt=0)
    """Independently seeded heads whose (normalised) outputs are concatenated: their cosine is the mean.
    Each member costs a full training."""
    ema_decay: float = Field(0.0, ge=0.0, lt=1.0)
    """Decay of an exponential moving average of the heads' weights, updated after every optimiser step
    (``torch.optim.swa_utils``); validation, early stopping and the saved model use the average. 0: off. On the
    H&M validation split one member with 0.98 scored 0.688 (one member without it, first cut: 0.689), hence off."""
    image_pca_dim: int = Field(0, ge=0)
    """Project the standardised image features onto their top principal axes (fitted on the training
    items) before the image head; 0 (or at least the feature width): off. It shrinks the image head's first
    layer while training; the projection is folded into the saved head, which takes the full-width vectors.
    Off: it cost R@10 on the H&M validation split with two members (256 axes: 0.679 vs 0.6975 without; 512
    axes, with the current training code: 0.658 vs 0.682 without)."""
    seed: int = 0
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    """Precision of the heads' forward pass while training: ``bfloat16`` runs it under torch's CPU autocast
    (weights, optimiser, loss, validation and the saved model stay float32); ``auto``: ``bfloat16`` where the
    CPU computes it natively (oneDNN reports AVX512-BF16 or AMX), else ``float32``. On the H&M validation
    split bfloat16 cost 27% less CPU at the same R@10 (0.653 vs 0.653, one member)."""
    fusion_text_weight: float = Field(0.5, ge=0.0)
    """Weight of the aligned text vector in the fused item embedding."""
    fusion_image_weight: float = Field(0.5, ge=0.0)
    """Weight of the aligned image vector; items without an image use their text vector alone."""
    min_items: int = Field(32, gt=1)
    """Refuse to train on fewer paired items than this."""
    threads: int = Field(1, ge=0)
    """torch threads for training, and numpy BLAS threads while it runs (threadpoolctl); 0 keeps both
    libraries' defaults. One thread spends the least CPU: on a busy machine two torch threads cost 7x the CPU
    seconds per sample (spinning OpenMP workers), and numpy's two idle OpenBLAS workers added ~30%; raise it
    on a machine of your own to cut the wall time."""

    @model_validator(mode="after")
    def _fusion_weights(self) -> AlignConfig:
        if self.fusion_text_weight + self.fusion_image_weight <= 0:
            raise ValueError("fusion_text_weight + fusion_image_weight must be > 0")
        return self
