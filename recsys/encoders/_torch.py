"""Small torch helpers shared by the encoders (imports torch: import this module lazily)."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import nn


def weights_fingerprint(module: nn.Module, *extra: object) -> str:
    """Short, stable hash of a module's parameters and buffers (plus ``extra`` settings).

    Hashes tensor names, shapes, dtypes and bytes in name order: ~0.1 s per 100 MB of weights.
    Returns 12 hex digits.
    """
    h = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        if not isinstance(tensor, torch.Tensor):
            continue
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{key}:{tuple(t.shape)}:{t.dtype}".encode())
        if t.dtype == torch.bfloat16:
            t = t.float()
        h.update(t.numpy().tobytes() if t.numel() else b"")
    for value in extra:
        h.update(repr(value).encode())
    return h.hexdigest()[:12]


def l2_normalize(x: torch.Tensor) -> np.ndarray:
    """``(n, d)`` tensor -> float32 numpy rows of unit L2 norm (zero rows stay zero)."""
    x = x.float()
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)


def resolve_device(device: str) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``; ``"auto"`` picks CUDA when available."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
