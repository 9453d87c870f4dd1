"""The per-stage pixel classifier: two conv layers, as in the paper (optionally an ASPP of them)."""
from __future__ import annotations

from typing import Sequence

from torch import nn

from ..ops import Features
from .blocks import conv3x3


class SegHead(nn.Module):
    """3x3 conv + BN + ReLU, then a 1x1 classifier. ``[B, in, H, W] -> [B, num_classes, H, W]``.

    ``dilation`` defaults to the stage's, so on a sparse stage the head reuses the stage's rulebook.
    """

    def __init__(self, in_channels: int, head_channels: int, num_classes: int, dilation: int = 1):
        super().__init__()
        self.conv = conv3x3(in_channels, head_channels, dilation=dilation)
        self.bn = nn.BatchNorm2d(head_channels)
        self.classifier = nn.Conv2d(head_channels, num_classes, 1)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: Features) -> Features:
        return x.conv_norm_relu(self.conv, self.bn).conv(self.classifier)


class ASPPHead(nn.Module):
    """DeepLab-v2 atrous spatial pyramid pooling as a pixel classifier: one :class:`SegHead` per
    rate (3x3 conv dilated by the rate + BN + ReLU, then a 1x1 classifier), logits summed.
    ``[B, in, H, W] -> [B, num_classes, H, W]``.

    No image-level pooling branch (DeepLab-v3's): a global average is not submanifold. On a
    sparse stage each rate builds its own rulebook.
    """

    def __init__(self, in_channels: int, head_channels: int, num_classes: int,
                 rates: Sequence[int] = (6, 12, 18, 24)):
        super().__init__()
        if not rates:
            raise ValueError("ASPPHead needs at least one rate")
        self.branches = nn.ModuleList(SegHead(in_channels, head_channels, num_classes, dilation=r) for r in rates)

    def forward(self, x: Features) -> Features:
        logits = self.branches[0](x)
        for branch in self.branches[1:]:
            logits = logits.add(branch(x))
        return logits
