"""Inception-ResNet-v2 blocks (Szegedy et al., 2016) written against the feature-container interface.

Module names and child order follow timm's ``inception_resnet_v2`` (``branch0``, ``branch1``, ...,
``conv2d``; a :class:`BasicConv2d` holds ``conv`` and ``bn``), so a timm state_dict loads by name
and :func:`~sparse_lc.layers.fuse_conv_bn` folds every ``bn`` into its ``conv``.

Every conv has 'same' padding for its kernel and dilation (TF-slim's ``align_feature_maps``), so
the blocks keep the resolution where timm's valid convs would shrink it, and a block in a sparse
stage is submanifold: 1x7 / 7x1 and 1x3 / 3x1 convs run as ``SubMConv2d`` with those kernels,
branch concatenations and scaled residuals act on feature rows, pools take the maximum over
active pixels only. ``width`` scales every channel count (1.0: the real network; small widths
give the same topology for fast tests).
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

from torch import nn

from ..ops import Features, concat

KernelSize = Union[int, Tuple[int, int]]


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 2 (batch norm statistics need a channel or two)."""
    return max(2, round(channels * width))


class BasicConv2d(nn.Module):
    """Conv (no bias) + BN (eps 1e-3, as the TF weights) + ReLU, 'same' padding.

    ``[B, in, H, W] -> [B, out, H / stride, W / stride]``; ``kernel_size`` may be ``(kh, kw)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: KernelSize, stride: int = 1,
                 dilation: int = 1):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        self.conv = nn.Conv2d(in_channels, out_channels, (kh, kw), stride=stride, dilation=dilation,
                              padding=(dilation * (kh - 1) // 2, dilation * (kw - 1) // 2), bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3)

    def forward(self, x: Features) -> Features:
        return x.conv_norm_relu(self.conv, self.bn)


class MaxPool(nn.Module):
    """Stride-1 'same' max pool (``kernel_size`` odd, dilated): on an active set, the maximum over
    its active pixels only. ``[B, C, H, W] -> [B, C, H, W]``."""

    def __init__(self, kernel_size: int = 3, dilation: int = 1):
        super().__init__()
        self.kernel_size, self.dilation = kernel_size, dilation

    def forward(self, x: Features) -> Features:
        return x.max_pool(self.kernel_size, self.dilation)


class DensePool(nn.Module):
    """A torch pooling module (e.g. ``nn.AvgPool2d``) on a dense map without active set (stage 1)."""

    def __init__(self, pool: nn.Module):
        super().__init__()
        self.pool = pool

    def forward(self, x: Features) -> Features:
        return x.pool(self.pool)


def _out_channels(branch: nn.Module, in_channels: int) -> int:
    """Output channels of a branch: those of its last conv (a pool alone keeps ``in_channels``)."""
    convs = [m for m in branch.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels if convs else in_channels


class Mixed(nn.Module):
    """Branches ``branch0, branch1, ...`` on the same input, concatenated on channels in order.

    ``[B, in_channels, H, W] -> [B, out_channels, H, W]`` (``out_channels``: the branches' sum).
    """

    def __init__(self, in_channels: int, branches: Sequence[nn.Module]):
        super().__init__()
        for i, branch in enumerate(branches):
            self.add_module(f"branch{i}", branch)
        self.num_branches = len(branches)
        self.out_channels = sum(_out_channels(b, in_channels) for b in branches)

    def forward(self, x: Features) -> Features:
        return concat([getattr(self, f"branch{i}")(x) for i in range(self.num_branches)])


class InceptionResidual(Mixed):
    """Block35 / Block17 / Block8: ``x + scale * conv2d(cat(branches(x)))``, then ReLU unless
    ``relu=False`` (the last Block8). ``conv2d`` is a 1x1 conv with bias back to ``in_channels``.
    ``[B, in_channels, H, W] -> [B, in_channels, H, W]``."""

    def __init__(self, in_channels: int, branches: Sequence[nn.Module], scale: float, relu: bool = True):
        super().__init__(in_channels, branches)
        self.conv2d = nn.Conv2d(self.out_channels, in_channels, 1)
        self.out_channels = in_channels
        self.scale, self.relu = scale, relu

    def forward(self, x: Features) -> Features:
        out = x.add(super().forward(x).conv(self.conv2d), alpha=self.scale)
        return out.relu() if self.relu else out

    def extra_repr(self) -> str:
        return f"scale={self.scale}, relu={self.relu}"


def _chain(in_channels: int, spec: Sequence[Tuple[int, KernelSize]], width: float, dilation: int) -> nn.Sequential:
    """A branch of BasicConv2d: ``spec`` lists (full-width out channels, kernel) in order."""
    layers = []
    for channels, kernel in spec:
        layers.append(BasicConv2d(in_channels, scaled(channels, width), kernel,
                                  dilation=1 if kernel == 1 else dilation))
        in_channels = scaled(channels, width)
    return nn.Sequential(*layers)


def mixed_5b(in_channels: int, width: float) -> Mixed:
    """The stem's last Inception block (35x35 grid in the paper): 4 branches, 320 channels at width 1."""
    return Mixed(in_channels, [
        BasicConv2d(in_channels, scaled(96, width), 1),
        _chain(in_channels, [(48, 1), (64, 5)], width, 1),
        _chain(in_channels, [(64, 1), (96, 3), (96, 3)], width, 1),
        nn.Sequential(DensePool(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)),
                      BasicConv2d(in_channels, scaled(64, width), 1)),
    ])


def block35(channels: int, width: float) -> InceptionResidual:
    """Inception-ResNet-A (stage 1, dense): 1x1 | 1x1-3x3 | 1x1-3x3-3x3, scale 0.17."""
    return InceptionResidual(channels, [
        BasicConv2d(channels, scaled(32, width), 1),
        _chain(channels, [(32, 1), (32, 3)], width, 1),
        _chain(channels, [(32, 1), (48, 3), (64, 3)], width, 1),
    ], scale=0.17)


def block17(channels: int, width: float, dilation: int) -> InceptionResidual:
    """Inception-ResNet-B: 1x1 | 1x1-1x7-7x1 (dilated along the long axis), scale 0.10."""
    return InceptionResidual(channels, [
        BasicConv2d(channels, scaled(192, width), 1),
        _chain(channels, [(128, 1), (160, (1, 7)), (192, (7, 1))], width, dilation),
    ], scale=0.10)


def block8(channels: int, width: float, dilation: int, scale: float = 0.20, relu: bool = True) -> InceptionResidual:
    """Inception-ResNet-C: 1x1 | 1x1-1x3-3x1, scale 0.20 (the final one: scale 1, no ReLU)."""
    return InceptionResidual(channels, [
        BasicConv2d(channels, scaled(192, width), 1),
        _chain(channels, [(192, 1), (224, (1, 3)), (256, (3, 1))], width, dilation),
    ], scale=scale, relu=relu)


def reduction_a(in_channels: int, width: float) -> Mixed:
    """Reduction-A (``mixed_6a``) at stride 1: 3x3 | 1x1-3x3-3x3 | 3x3 max pool; 1088 ch at width 1."""
    return Mixed(in_channels, [
        BasicConv2d(in_channels, scaled(384, width), 3),
        _chain(in_channels, [(256, 1), (256, 3), (384, 3)], width, 1),
        MaxPool(3),
    ])


def reduction_b(in_channels: int, width: float, dilation: int) -> Mixed:
    """Reduction-B (``mixed_7a``) at stride 1, its 3x3 convs and max pool dilated by ``dilation``
    (the rate of its input): 1x1-3x3 | 1x1-3x3 | 1x1-3x3-3x3 | max pool; 2080 ch at width 1."""
    return Mixed(in_channels, [
        _chain(in_channels, [(256, 1), (384, 3)], width, dilation),
        _chain(in_channels, [(256, 1), (288, 3)], width, dilation),
        _chain(in_channels, [(256, 1), (288, 3), (320, 3)], width, dilation),
        MaxPool(3, dilation),
    ])
