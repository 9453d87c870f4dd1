"""ConvNeXt blocks (Liu et al., 2022) written against the feature-container interface.

Module and parameter names follow timm's ``convnext`` (``conv_dw``, ``norm``, ``mlp.fc1``,
``mlp.fc2``, ``gamma``; a stage holds ``downsample`` and ``blocks``), so a timm state_dict loads
by name. A block is ``x + gamma * fc2(GELU(fc1(LN(dwconv7x7(x)))))``: a depthwise conv, a layer
norm over the channels (channels-last, eps 1e-6), a two-layer MLP over the channels (``nn.Linear``)
and a per-channel layer scale. In a sparse stage each of these is exact on the active rows: the
depthwise conv reads the active neighbours of its (dilated) window, the rest is row-local.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from ..ops import Features, run_sequential

LN_EPS = 1e-6  # ConvNeXt's layer norms (timm's and torchvision's)


class Mlp(nn.Module):
    """``fc1 -> GELU -> fc2`` over the channels (timm's ``Mlp``). ``[B, in, H, W] -> [B, in, H, W]``."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: Features) -> Features:
        return x.linear(self.fc1).act(self.act).linear(self.fc2)


class ConvNeXtBlock(nn.Module):
    """``x + gamma * mlp(norm(conv_dw(x)))``; ``[B, C, H, W] -> [B, C, H, W]``.

    ``conv_dw``: depthwise ``kernel_size`` conv, dilated by ``dilation``, 'same' padding.
    ``gamma``: the layer scale, ``[C]`` (None when ``ls_init_value`` is None).
    """

    def __init__(self, channels: int, kernel_size: int = 7, dilation: int = 1, mlp_ratio: int = 4,
                 ls_init_value: Optional[float] = 1e-6):
        super().__init__()
        self.conv_dw = nn.Conv2d(channels, channels, kernel_size, padding=dilation * (kernel_size - 1) // 2,
                                 dilation=dilation, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=LN_EPS)
        self.mlp = Mlp(channels, mlp_ratio * channels)
        self.gamma = None if ls_init_value is None else nn.Parameter(torch.full((channels,), float(ls_init_value)))

    def forward(self, x: Features) -> Features:
        out = self.mlp(x.conv(self.conv_dw).norm(self.norm))
        return (out if self.gamma is None else out.scale(self.gamma)).add(x)


class ConvNeXtStage(nn.Module):
    """``downsample`` (layer norm + 2x2 conv, when the width changes) then ``depth`` blocks.
    ``[B, in, H, W] -> [B, out, H / stride, W / stride]``.

    ``dilation = (d_in, d)``: the blocks' depthwise convs are dilated by ``d``. At ``stride`` 1
    with a width change (a stage of output stride 8 that the ImageNet network strides), the 2x2
    downsampling conv keeps its weights at stride 1, dilated by ``d_in`` with 'same' padding: as
    timm builds ``convnext_*(output_stride=8)`` (a 2x2 window at dilation 1 reads the pixel and
    its right, lower and lower-right neighbours; at dilation 2, the four diagonal neighbours).
    """

    def __init__(self, in_channels: int, out_channels: int, depth: int, stride: int = 1,
                 dilation: Tuple[int, int] = (1, 1), kernel_size: int = 7, ls_init_value: Optional[float] = 1e-6):
        super().__init__()
        if in_channels == out_channels and stride == 1:
            self.downsample = nn.Identity()
        elif stride == 1:
            self.downsample = nn.Sequential(nn.LayerNorm(in_channels, eps=LN_EPS),
                                            nn.Conv2d(in_channels, out_channels, 2, dilation=dilation[0],
                                                      padding="same"))
        else:
            self.downsample = nn.Sequential(nn.LayerNorm(in_channels, eps=LN_EPS),
                                            nn.Conv2d(in_channels, out_channels, 2, stride=stride))
        self.blocks = nn.Sequential(*(ConvNeXtBlock(out_channels, kernel_size, dilation[1], ls_init_value=ls_init_value)
                                      for _ in range(depth)))

    def forward(self, x: Features) -> Features:
        if isinstance(self.downsample, nn.Sequential):
            x = run_sequential(x, self.downsample)
        for block in self.blocks:
            x = block(x)
        return x
