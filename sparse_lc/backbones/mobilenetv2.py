"""MobileNetV2 at output stride 8, in timm's layout (torchvision's state_dicts load too).

Stage 1 = stem (3x3 conv, stride 2) + block stacks 0-2 (16, 24, 32 channels; stride 8);
stage 2 = stacks 3-4 (64, 96), stage 3 = stacks 5-6 (160, 320): the strides of stacks 3 and 5
become dilation ``dilations`` (2, 4) of the depthwise convs, each stack's first block keeping
the rate before it. This is the network ``timm.create_model("mobilenetv2_100",
output_stride=8)`` builds (DeepLab's MobileNetV2 geometry), with timm's module names
(``conv_stem``, ``bn1``, ``blocks.i.j.conv_pw`` ...). The final 1x1 conv to 1280 channels and the
ImageNet classifier (``conv_head``, ``bn2``, ``classifier``; torchvision's ``features.18``,
``classifier``) are not used: each stage ends in the cascade's own head, as in segmentation
networks built on MobileNetV2.
"""
from __future__ import annotations

import re
from typing import Dict, List, Mapping, Sequence, Tuple

import torch
from torch import nn

from ..layers import DepthwiseSeparableConv, InvertedResidual, init_weights, make_divisible, run_blocks
from ..ops import DenseFeatures, Features
from .base import CascadeBackbone, load_matching, register_backbone

# (expand ratio, channels, stride) of MobileNetV2's seven block stacks, and their blocks
STACKS = ((1, 16, 1), (6, 24, 2), (6, 32, 2), (6, 64, 2), (6, 96, 1), (6, 160, 2), (6, 320, 1))
DEPTHS = (1, 2, 3, 4, 3, 3, 1)
_HEAD = ("conv_head.", "bn2.", "classifier.")


class MobileNetV2OS8(CascadeBackbone):
    """MobileNetV2 split into three stages at output stride 8.

    Args:
        width:     channel multiplier (timm's ``channel_multiplier``, torchvision's ``width_mult``):
                   every width rounded to a multiple of 8.
        depths:    blocks of the seven stacks (MobileNetV2: 1, 2, 3, 4, 3, 3, 1).
        dilations: dilation of the cascade's stages 2 and 3 (their heads use the same).
    """

    def __init__(self, width: float = 1.0, depths: Sequence[int] = DEPTHS, dilations: Tuple[int, int] = (2, 4)):
        super().__init__()
        if len(depths) != len(STACKS) or min(depths) < 1:
            raise ValueError(f"depths must be {len(STACKS)} block counts >= 1, got {tuple(depths)}")
        stem = make_divisible(32 * width)
        self.conv_stem = nn.Conv2d(3, stem, 3, stride=2, padding=1, bias=False)              # H/2
        self.bn1 = nn.BatchNorm2d(stem)
        self.act = nn.ReLU6()
        rates = (1, 1, 1, dilations[0], dilations[0], dilations[1], dilations[1])  # the dilation of each stack
        stacks, channels = [], stem
        for i, ((expand, out, stride), depth) in enumerate(zip(STACKS, depths)):
            out = make_divisible(out * width)
            blocks = []
            for j in range(depth):
                dilation = rates[max(i - 1, 0)] if j == 0 else rates[i]  # a stack's first block: the rate before
                block_stride = stride if j == 0 and i < 3 else 1  # stage 1 strides, stages 2-3 never
                if expand == 1:
                    blocks.append(DepthwiseSeparableConv(channels, out, block_stride, dilation))
                else:
                    blocks.append(InvertedResidual(channels, out, block_stride, dilation, expand))
                channels = out
            stacks.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stacks)                                                # H/8 after stack 2
        self.depths, self.width = tuple(depths), width
        self.stage_channels = tuple(make_divisible(c * width) for c in (32, 96, 320))
        self.stage_dilations = (1, dilations[0], dilations[1])
        init_weights(self)

    def load_pretrained(self, state_dict: Mapping[str, torch.Tensor]) -> List[str]:
        """A timm ``mobilenetv2_*`` state_dict, or a torchvision ``mobilenet_v2`` one
        (``features.*``, renamed to timm's keys); returns the keys not used (the final 1x1 conv
        to 1280 channels and the classifier)."""
        if any(key.removeprefix("module.").startswith("features.") for key in state_dict):
            state_dict = torchvision_to_timm(state_dict, self.depths)
        return load_matching(self, state_dict, lambda key: key.startswith(_HEAD), "mobilenetv2")

    def stage_modules(self):
        return [self.conv_stem, self.bn1, *self.blocks[:3]], [*self.blocks[3:5]], [*self.blocks[5:]]

    def stage1(self, images: torch.Tensor) -> torch.Tensor:
        x = DenseFeatures(images).conv(self.conv_stem).norm(self.bn1).act(self.act)     # [B, 32w, H/2, W/2]
        for stack in self.blocks[:3]:
            x = run_blocks(x, stack)
        return x.to_dense()                                                              # [B, 32w, H/8, W/8]

    def stage2(self, x: Features) -> Features:
        return run_blocks(run_blocks(x, self.blocks[3]), self.blocks[4])                # [B, 96w, h, w]

    def stage3(self, x: Features) -> Features:
        return run_blocks(run_blocks(x, self.blocks[5]), self.blocks[6])                # [B, 320w, h, w]


_TV_FIRST = {"conv.0.0": "conv_dw", "conv.0.1": "bn1", "conv.1": "conv_pw", "conv.2": "bn2"}
_TV_BLOCK = {"conv.0.0": "conv_pw", "conv.0.1": "bn1", "conv.1.0": "conv_dw", "conv.1.1": "bn2", "conv.2": "conv_pwl",
             "conv.3": "bn3"}


def torchvision_to_timm(state_dict: Mapping[str, torch.Tensor], depths: Sequence[int] = DEPTHS
                        ) -> Dict[str, torch.Tensor]:
    """A torchvision MobileNetV2 state_dict with timm's keys: ``features.0.{0,1}`` ->
    ``conv_stem`` / ``bn1``; ``features.k`` (k = 1 ... 17) -> ``blocks.i.j`` (block k - 1 of the
    stacks of ``depths``), its ``conv.*`` -> ``conv_pw``, ``bn1``, ``conv_dw``, ``bn2``,
    ``conv_pwl``, ``bn3``; the last ``features`` -> ``conv_head`` / ``bn2``; ``classifier.1`` ->
    ``classifier``. A ``module.`` prefix is removed; other keys pass through."""
    places = [(i, j) for i, depth in enumerate(depths) for j in range(depth)]
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        match = re.match(r"features\.(\d+)\.(.*)\.(\w+)$", key)
        if key.startswith("classifier.1."):
            key = "classifier." + key[len("classifier.1."):]
        elif match and match[1] == "0":
            key = f"{'conv_stem' if match[2] == '0' else 'bn1'}.{match[3]}"
        elif match and int(match[1]) == len(places) + 1:
            key = f"{'conv_head' if match[2] == '0' else 'bn2'}.{match[3]}"
        elif match and int(match[1]) <= len(places):
            i, j = places[int(match[1]) - 1]
            names = _TV_FIRST if i == 0 else _TV_BLOCK
            key = f"blocks.{i}.{j}.{names.get(match[2], match[2])}.{match[3]}"
        out[key] = value
    return out


@register_backbone("mobilenet_v2", weights_layout="torchvision", weights_file="mobilenet_v2-b0353104.pth",
                   small_args={"width": 0.25, "depths": (1, 1, 1, 2, 1, 2, 1)})
def mobilenet_v2(width: float = 1.0, depths: Sequence[int] = DEPTHS,
                 dilations: Tuple[int, int] = (2, 4)) -> MobileNetV2OS8:
    """MobileNetV2 (3.5 M parameters with its 1280-channel head and classifier, 1.8 M without):
    stage channels 32 / 96 / 320. ImageNet normalisation, as timm's and torchvision's weights expect."""
    return MobileNetV2OS8(width, tuple(depths), tuple(dilations))
