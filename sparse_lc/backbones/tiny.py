"""A tiny backbone for tests and quick experiments: runs in milliseconds on a CPU."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

from ..layers import BasicBlock, init_weights, make_layer, run_blocks
from ..ops import DenseFeatures, Features, run_sequential
from .base import CascadeBackbone, register_backbone


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class TinyOS8(CascadeBackbone):
    """Three stride-2 convs and ``depths[0]`` blocks (stage 1), then ``depths[1]`` and
    ``depths[2]`` dilated blocks (stages 2 and 3) of widths ``widths``."""

    def __init__(self, widths: Tuple[int, int, int] = (16, 24, 32), dilations: Tuple[int, int] = (2, 4),
                 depths: Tuple[int, int, int] = (1, 1, 1)):
        super().__init__()
        c1, c2, c3 = widths
        self.stem = nn.Sequential(_conv_bn_relu(3, min(c1, 16)), _conv_bn_relu(min(c1, 16), c1), _conv_bn_relu(c1, c1))
        self.layer1 = make_layer(BasicBlock, c1, c1, depths[0])
        self.layer2 = make_layer(BasicBlock, c1, c2, depths[1], dilation=dilations[0])
        self.layer3 = make_layer(BasicBlock, c2, c3, depths[2], dilation=dilations[1])
        self.stage_channels = (c1, c2, c3)
        self.stage_dilations = (1, dilations[0], dilations[1])
        init_weights(self)

    def stage_modules(self):
        return [self.stem, self.layer1], [self.layer2], [self.layer3]

    def stage1(self, images: torch.Tensor) -> torch.Tensor:
        return run_blocks(run_sequential(DenseFeatures(images), self.stem), self.layer1).to_dense()

    def stage2(self, x: Features) -> Features:
        return run_blocks(x, self.layer2)

    def stage3(self, x: Features) -> Features:
        return run_blocks(x, self.layer3)


@register_backbone("tiny")  # no pretrained weights: ImageNet normalisation by default
def tiny(widths: Tuple[int, int, int] = (16, 24, 32), dilations: Tuple[int, int] = (2, 4),
         depths: Tuple[int, int, int] = (1, 1, 1)) -> TinyOS8:
    return TinyOS8(tuple(widths), tuple(dilations), tuple(depths))
