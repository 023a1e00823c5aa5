"""Trainable projection heads (torch), convertible to the numpy :class:`~recsys.align.model.Head`.

Imports torch: load this module only to train.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from recsys.align.model import Head


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout, as :func:`torch.nn.functional.dropout`: each entry kept with probability ``1 - p``
    and scaled by ``1 / (1 - p)``.

    The keep mask is drawn as ``uniform >= p`` in float32, in place: on one CPU thread this is several times
    cheaper than torch's Bernoulli sampler, which took a fifth of the alignment's training time.
    """
    if not training or p == 0.0:
        return x
    mask = torch.rand(x.shape, dtype=torch.float32, device=x.device).ge_(p).mul_(1.0 / (1.0 - p))  # 0 or 1/(1-p)
    return x * mask.to(x.dtype)


class ProjectionHead(nn.Module):
    """``linear``: ``x W + b``; ``mlp``: ``x W + b + gelu(x W1 + b1) W2 + b2``; output L2-normalised.

    ``dropout`` applies to the input (feature dropout) and to the MLP's hidden layer while training.
    """

    def __init__(self, in_dim: int, dim: int, kind: str = "mlp", hidden_dim: int = 1024, dropout: float = 0.0) -> None:
        super().__init__()
        if kind not in ("linear", "mlp"):
            raise ValueError(f"kind must be 'linear' or 'mlp', got {kind!r}")
        self.kind = kind
        self.proj = nn.Linear(in_dim, dim)
        self.p_drop = dropout
        if kind == "mlp":
            self.fc1 = nn.Linear(in_dim, hidden_dim)
            self.fc2 = nn.Linear(hidden_dim, dim)
            # Start close to the linear head: the MLP branch adds a small correction at first.
            nn.init.normal_(self.fc2.weight, std=1e-3)
            nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(b, in_dim)`` standardised features → ``(b, dim)`` unit vectors."""
        x = dropout(x, self.p_drop, self.training)
        y = self.proj(x)
        if self.kind == "mlp":
            y = y + self.fc2(dropout(F.gelu(self.fc1(x), approximate="tanh"), self.p_drop, self.training))
        return F.normalize(y, dim=-1)

    def to_numpy(self, mean: np.ndarray, scale: np.ndarray, basis: np.ndarray | None = None) -> Head:
        """The same map as a numpy :class:`Head` (weights transposed to ``(in, out)``).

        ``basis``: ``(d, in_dim)`` float32 when the head was trained on standardised features projected
        onto ``in_dim`` principal axes (``z @ basis``). The projection is linear, so it is folded into the
        first layer's weights (``basis @ W``): the numpy head takes the ``d``-wide features and needs no
        extra state.
        """

        def arr(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().to(torch.float32).numpy().copy()

        def first(w: torch.Tensor) -> np.ndarray:
            wt = arr(w).T
            return wt.copy() if basis is None else (np.asarray(basis, np.float64) @ wt).astype(np.float32)

        params = {"W": first(self.proj.weight), "b": arr(self.proj.bias)}
        if self.kind == "mlp":
            params |= {
                "W1": first(self.fc1.weight),
                "b1": arr(self.fc1.bias),
                "W2": arr(self.fc2.weight).T.copy(),
                "b2": arr(self.fc2.bias),
            }
        return Head(self.kind, np.asarray(mean, np.float32), np.asarray(scale, np.float32), params)
