"""Dilated ResNet at output stride 8 (DeepLab / mmsegmentation style), in torchvision's layout.

Stage 1 = stem + layer1 + layer2 (stride 8), stage 2 = layer3, stage 3 = layer4; layer3 and
layer4 use dilation instead of stride (default 2 and 4). Module names are torchvision's, so
``load_torchvision_resnet`` takes a torchvision ResNet state_dict as it is.
"""
from __future__ import annotations

from typing import List, Mapping, Sequence, Tuple

import torch
from torch import nn

from ..layers import BasicBlock, Bottleneck, init_weights, make_layer, run_blocks
from ..ops import DenseFeatures, Features
from .base import CascadeBackbone, load_matching, register_backbone


class ResNetOS8(CascadeBackbone):
    """``block`` and ``layers`` as in torchvision (e.g. BasicBlock, (2, 2, 2, 2) for ResNet-18)."""

    def __init__(self, block: type, layers: Sequence[int], dilations: Tuple[int, int] = (2, 4)):
        super().__init__()
        e = block.expansion
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = make_layer(block, 64, 64, layers[0])
        self.layer2 = make_layer(block, 64 * e, 128, layers[1], stride=2)
        self.layer3 = make_layer(block, 128 * e, 256, layers[2], dilation=dilations[0])
        self.layer4 = make_layer(block, 256 * e, 512, layers[3], dilation=dilations[1])
        self.stage_channels = (128 * e, 256 * e, 512 * e)
        self.stage_dilations = (1, dilations[0], dilations[1])
        init_weights(self)

    def load_pretrained(self, state_dict: Mapping[str, torch.Tensor]) -> List[str]:
        """A torchvision ResNet state_dict (see :func:`load_torchvision_resnet`)."""
        return load_torchvision_resnet(self, state_dict)

    def stage_modules(self):
        return [self.conv1, self.bn1, self.layer1, self.layer2], [self.layer3], [self.layer4]

    def stage1(self, images: torch.Tensor) -> torch.Tensor:
        x = DenseFeatures(images).conv(self.conv1).norm(self.bn1).relu().pool(self.maxpool)  # [B, 64, H/4, W/4]
        x = run_blocks(x, self.layer1)
        return run_blocks(x, self.layer2).to_dense()  # [B, C1, H/8, W/8]

    def stage2(self, x: Features) -> Features:
        return run_blocks(x, self.layer3)

    def stage3(self, x: Features) -> Features:
        return run_blocks(x, self.layer4)


def load_torchvision_resnet(backbone: ResNetOS8, state_dict: Mapping[str, torch.Tensor]) -> List[str]:
    """Load a torchvision ResNet state_dict (ImageNet classifier ``fc.*`` dropped).

    A ``module.`` prefix (DataParallel checkpoints) is removed. Raises ValueError naming the
    missing or mismatched keys; returns the names of the dropped classifier keys.
    """
    return load_matching(backbone, state_dict, lambda key: key.startswith("fc."), "torchvision ResNet")


@register_backbone("resnet18", weights_layout="torchvision", weights_file="resnet18-f37072fd.pth")
def resnet18(dilations: Tuple[int, int] = (2, 4)) -> ResNetOS8:
    return ResNetOS8(BasicBlock, (2, 2, 2, 2), dilations)


@register_backbone("resnet34", weights_layout="torchvision", weights_file="resnet34-b627a593.pth")
def resnet34(dilations: Tuple[int, int] = (2, 4)) -> ResNetOS8:
    return ResNetOS8(BasicBlock, (3, 4, 6, 3), dilations)


@register_backbone("resnet50", weights_layout="torchvision", weights_file="resnet50-0676ba61.pth")
def resnet50(dilations: Tuple[int, int] = (2, 4)) -> ResNetOS8:
    return ResNetOS8(Bottleneck, (3, 4, 6, 3), dilations)
