"""Inception-ResNet-v2 at output stride 8, the backbone of the paper (Li et al., CVPR 2017).

Stage 1 (dense) = stem + Inception-ResNet-A x ``depths[0]`` + Reduction-A;
stage 2 = Inception-ResNet-B x ``depths[1]`` + Reduction-B;
stage 3 = Inception-ResNet-C x ``depths[2]`` (the last one without ReLU, timm's ``block8``) + the
final 1x1 conv ``conv2d_7b``. The ImageNet pooling and classifier are removed.

Output stride 8: the stem uses 'same' padding (512x512 -> 64x64 instead of timm's valid 61x61),
Reduction-A and Reduction-B run at stride 1, and the layers after each use dilation instead:
Inception-ResNet-B and Reduction-B at ``dilations[0]`` (2), Inception-ResNet-C at
``dilations[1]`` (4). Padding changes no weight, so timm's ImageNet weights load by name
(:meth:`InceptionResNetV2OS8.load_pretrained`).

Depths: the paper's figure has 5 / 10 / 5 blocks (``inception_resnet_v2``); timm's ImageNet
network has 10 / 20 / 10 (``inception_resnet_v2_full``). Loading timm's weights into the shallow
one takes the first blocks of each repeat (and the last Block8, ``block8``).
"""
from __future__ import annotations

import re
from typing import List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..layers import ASPPHead, init_weights, run_blocks
from ..layers.inception import BasicConv2d, block8, block17, block35, mixed_5b, reduction_a, reduction_b, scaled
from ..ops import DenseFeatures, Features
from .base import CascadeBackbone, load_matching, register_backbone

PAPER_DEPTHS = (5, 10, 5)
TIMM_DEPTHS = (10, 20, 10)
# timm's ImageNet weights expect Inception normalisation, (x / 255 - 0.5) / 0.5
INCEPTION_MEAN = INCEPTION_STD = (127.5, 127.5, 127.5)
_REPEAT_BLOCK = re.compile(r"^(repeat|repeat_1|repeat_2)\.(\d+)\.")


class InceptionResNetV2OS8(CascadeBackbone):
    """Inception-ResNet-v2 split into three stages at output stride 8.

    Args:
        depths:     blocks of type A, B, C (the C count includes the final no-ReLU ``block8``).
        width:      multiplies every channel count (1.0: the real network, stage channels
                    1088 / 2080 / 1536; small widths for fast tests).
        dilations:  dilation of stage 2 and stage 3 (their heads use the same).
        aspp_rates: if given, stage 3's classifier is a DeepLab-v2 ASPP with these rates.
    """

    def __init__(self, depths: Sequence[int] = PAPER_DEPTHS, width: float = 1.0,
                 dilations: Tuple[int, int] = (2, 4), aspp_rates: Optional[Sequence[int]] = None):
        super().__init__()
        if len(depths) != 3 or min(depths) < 1:
            raise ValueError(f"depths must be three block counts >= 1, got {tuple(depths)}")
        d2, d3 = dilations
        self.conv2d_1a = BasicConv2d(3, scaled(32, width), 3, stride=2)               # H/2
        self.conv2d_2a = BasicConv2d(scaled(32, width), scaled(32, width), 3)
        self.conv2d_2b = BasicConv2d(scaled(32, width), scaled(64, width), 3)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2, padding=1)                         # H/4
        self.conv2d_3b = BasicConv2d(scaled(64, width), scaled(80, width), 1)
        self.conv2d_4a = BasicConv2d(scaled(80, width), scaled(192, width), 3)
        self.maxpool_5a = nn.MaxPool2d(3, stride=2, padding=1)                         # H/8
        self.mixed_5b = mixed_5b(scaled(192, width), width)
        c0 = self.mixed_5b.out_channels
        self.repeat = nn.Sequential(*(block35(c0, width) for _ in range(depths[0])))
        self.mixed_6a = reduction_a(c0, width)
        c1 = self.mixed_6a.out_channels
        self.repeat_1 = nn.Sequential(*(block17(c1, width, d2) for _ in range(depths[1])))
        self.mixed_7a = reduction_b(c1, width, d2)
        c2 = self.mixed_7a.out_channels
        self.repeat_2 = nn.Sequential(*(block8(c2, width, d3) for _ in range(depths[2] - 1)))
        self.block8 = block8(c2, width, d3, scale=1.0, relu=False)
        self.conv2d_7b = BasicConv2d(c2, scaled(1536, width), 1)
        self.depths = tuple(depths)
        self.aspp_rates = None if aspp_rates is None else tuple(aspp_rates)
        self.stage_channels = (c1, c2, self.conv2d_7b.conv.out_channels)
        self.stage_dilations = (1, d2, d3)
        init_weights(self)

    def make_head(self, stage: int, head_channels: int, num_classes: int) -> nn.Module:
        if stage == 3 and self.aspp_rates is not None:
            return ASPPHead(self.stage_channels[2], head_channels, num_classes, self.aspp_rates)
        return super().make_head(stage, head_channels, num_classes)

    def load_pretrained(self, state_dict: Mapping[str, torch.Tensor]) -> List[str]:
        """Load a timm ``inception_resnet_v2`` state_dict; return the keys not used: the ImageNet
        classifier ``classif.*`` and the blocks of each repeat beyond this network's depth."""
        limits = {"repeat": self.depths[0], "repeat_1": self.depths[1], "repeat_2": self.depths[2] - 1}

        def unused(key: str) -> bool:
            block = _REPEAT_BLOCK.match(key)
            return key.startswith("classif.") or (block is not None and int(block[2]) >= limits[block[1]])

        return load_matching(self, state_dict, unused, "timm inception_resnet_v2")

    def stage_modules(self):
        stem = [self.conv2d_1a, self.conv2d_2a, self.conv2d_2b, self.conv2d_3b, self.conv2d_4a]
        return ([*stem, self.mixed_5b, self.repeat, self.mixed_6a], [self.repeat_1, self.mixed_7a],
                [self.repeat_2, self.block8, self.conv2d_7b])

    def stage1(self, images: torch.Tensor) -> torch.Tensor:
        x = self.conv2d_2b(self.conv2d_2a(self.conv2d_1a(DenseFeatures(images))))     # [B, 64, H/2, W/2]
        x = self.conv2d_4a(self.conv2d_3b(x.pool(self.maxpool_3a)))                   # [B, 192, H/4, W/4]
        x = run_blocks(self.mixed_5b(x.pool(self.maxpool_5a)), self.repeat)           # [B, 320, H/8, W/8]
        return self.mixed_6a(x).to_dense()                                            # [B, 1088, H/8, W/8]

    def stage2(self, x: Features) -> Features:
        return self.mixed_7a(run_blocks(x, self.repeat_1))                            # [B, 2080, h, w]

    def stage3(self, x: Features) -> Features:
        return self.conv2d_7b(self.block8(run_blocks(x, self.repeat_2)))              # [B, 1536, h, w]


@register_backbone("inception_resnet_v2", pixel_mean=INCEPTION_MEAN, pixel_std=INCEPTION_STD,
                   weights_layout="timm", weights_file="inception_resnet_v2.pth",
                   small_args={"width": 1 / 16, "depths": (1, 2, 2)})
def inception_resnet_v2(depths: Sequence[int] = PAPER_DEPTHS, width: float = 1.0,
                        dilations: Tuple[int, int] = (2, 4),
                        aspp_rates: Optional[Sequence[int]] = None) -> InceptionResNetV2OS8:
    """The paper's depths, 5 / 10 / 5 blocks."""
    return InceptionResNetV2OS8(tuple(depths), width, tuple(dilations), aspp_rates)


@register_backbone("inception_resnet_v2_full", pixel_mean=INCEPTION_MEAN, pixel_std=INCEPTION_STD,
                   weights_layout="timm", weights_file="inception_resnet_v2.pth", small_args={"width": 1 / 16})
def inception_resnet_v2_full(width: float = 1.0, dilations: Tuple[int, int] = (2, 4),
                             aspp_rates: Optional[Sequence[int]] = None) -> InceptionResNetV2OS8:
    """timm's (ImageNet) depths, 10 / 20 / 10 blocks: every weight of timm's file is used."""
    return InceptionResNetV2OS8(TIMM_DEPTHS, width, tuple(dilations), aspp_rates)
