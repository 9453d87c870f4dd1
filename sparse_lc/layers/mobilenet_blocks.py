"""MobileNet blocks (Sandler et al., 2018) written against the feature-container interface.

Module names follow timm's (``conv_pw``, ``bn1``, ``conv_dw``, ``bn2``, ``conv_pwl``, ``bn3``;
``se.conv_reduce`` / ``se.conv_expand``), so timm's state_dicts load by name, and every batch
norm directly follows its conv, so :func:`~sparse_lc.layers.fuse_conv_bn` folds each of them. In
a sparse stage the depthwise conv reads the active neighbours of its window, the 1x1 convs and
norms are row-local, and squeeze-excitation's pooling is each image's mean over its active
pixels (:meth:`~sparse_lc.ops.Features.global_pool`: the real global pool when every pixel is).
"""
from __future__ import annotations

from typing import Optional, Type

from torch import nn

from ..ops import Features


def make_divisible(value: float, divisor: int = 8) -> int:
    """``value`` rounded to a multiple of ``divisor``, at least ``divisor``, never below 90% of
    it (torchvision's ``_make_divisible``, timm's ``make_divisible``)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _dw_conv(channels: int, kernel_size: int, stride: int, dilation: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, kernel_size, stride=stride, padding=dilation * (kernel_size - 1) // 2,
                     dilation=dilation, groups=channels, bias=False)


class SqueezeExcite(nn.Module):
    """``x * gate(conv_expand(act(conv_reduce(global_pool(x)))))`` (timm's ``SqueezeExcite``):
    a per-image, per-channel gate. ``[B, C, H, W] -> [B, C, H, W]``."""

    def __init__(self, channels: int, reduced: int, act_layer: Type[nn.Module] = nn.ReLU,
                 gate_layer: Type[nn.Module] = nn.Sigmoid):
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.act1 = act_layer()
        self.conv_expand = nn.Conv2d(reduced, channels, 1)
        self.gate = gate_layer()

    def forward(self, x: Features) -> Features:
        pooled = x.global_pool()  # [B, C, 1, 1]
        return x.mul(pooled.conv(self.conv_reduce).act(self.act1).conv(self.conv_expand).act(self.gate))


class _MobileBlock(nn.Module):
    """What MobileNet's blocks share: an activation, and a residual when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, act_layer: Type[nn.Module]):
        super().__init__()
        self.act = act_layer()
        self.has_skip = stride == 1 and in_channels == out_channels

    def _conv_bn(self, x: Features, conv: nn.Conv2d, bn: nn.BatchNorm2d, act: bool = True) -> Features:
        out = x.conv(conv).norm(bn)
        return out.act(self.act) if act else out

    def _residual(self, out: Features, x: Features) -> Features:
        return out.add(x) if self.has_skip else out


class DepthwiseSeparableConv(_MobileBlock):
    """MobileNetV2's first block: depthwise 3x3 + BN + act, then a 1x1 projection + BN (no act).
    ``[B, in, H, W] -> [B, out, H / stride, W / stride]``; residual when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1,
                 act_layer: Type[nn.Module] = nn.ReLU6):
        super().__init__(in_channels, out_channels, stride, act_layer)
        self.conv_dw = _dw_conv(in_channels, 3, stride, dilation)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv_pw = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: Features) -> Features:
        out = self._conv_bn(x, self.conv_dw, self.bn1)
        return self._residual(self._conv_bn(out, self.conv_pw, self.bn2, act=False), x)


class InvertedResidual(_MobileBlock):
    """1x1 expansion + BN + act, depthwise ``kernel_size`` conv + BN + act, optional
    squeeze-excitation, 1x1 linear projection + BN; residual when the shape is kept.
    ``[B, in, H, W] -> [B, out, H / stride, W / stride]``; hidden width ``in * expand_ratio``.

    ``se_ratio``: squeeze-excitation with ``in * se_ratio`` reduced channels (EfficientNet's
    rule; None: none, as in MobileNetV2).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1,
                 expand_ratio: float = 6.0, kernel_size: int = 3, act_layer: Type[nn.Module] = nn.ReLU6,
                 se_ratio: Optional[float] = None):
        super().__init__(in_channels, out_channels, stride, act_layer)
        hidden = make_divisible(in_channels * expand_ratio)
        self.conv_pw = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv_dw = _dw_conv(hidden, kernel_size, stride, dilation)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.se = None if se_ratio is None else SqueezeExcite(hidden, max(1, int(in_channels * se_ratio)), act_layer)
        self.conv_pwl = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)

    def forward(self, x: Features) -> Features:
        out = self._conv_bn(self._conv_bn(x, self.conv_pw, self.bn1), self.conv_dw, self.bn2)
        if self.se is not None:
            out = self.se(out)
        return self._residual(self._conv_bn(out, self.conv_pwl, self.bn3, act=False), x)
