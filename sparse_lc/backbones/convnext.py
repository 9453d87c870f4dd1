"""ConvNeXt at output stride 8, in timm's layout (torchvision's state_dicts load too).

Stage 1 = stem (4x4 conv, stride 4, + layer norm) + ConvNeXt stages 0 and 1 (stride 8);
stage 2 = ConvNeXt stage 2, stage 3 = ConvNeXt stage 3, dilated instead of strided: their
depthwise 7x7 convs at ``dilations`` (2, 4), their 2x2 downsampling convs at stride 1 (dilated
by the rate before, 'same' padding). This is the network ``timm.create_model("convnext_tiny",
output_stride=8)`` builds, with the same module names, so timm's weights load as they are and
its output-stride-8 model gives the same features. The ImageNet head (``head.*``; torchvision's
``classifier.*``) is not used: each stage ends in the cascade's own head.
"""
from __future__ import annotations

import re
from typing import Dict, List, Mapping, Sequence, Tuple

import torch
from torch import nn

from ..layers import ConvNeXtStage
from ..layers.convnext_blocks import LN_EPS
from ..ops import DenseFeatures, Features, run_sequential
from .base import CascadeBackbone, load_matching, register_backbone

TINY_DEPTHS, TINY_DIMS = (3, 3, 9, 3), (96, 192, 384, 768)


class ConvNeXtOS8(CascadeBackbone):
    """ConvNeXt split into three stages at output stride 8.

    Args:
        depths:        blocks of the four ConvNeXt stages (ConvNeXt-T: 3, 3, 9, 3).
        dims:          their widths (ConvNeXt-T: 96, 192, 384, 768); stage channels are
                       ``dims[1:]``.
        dilations:     dilation of the cascade's stages 2 and 3 (their heads use the same).
        kernel_size:   the depthwise convs' kernel.
        ls_init_value: initial layer scale (timm's and torchvision's 1e-6).
    """

    def __init__(self, depths: Sequence[int] = TINY_DEPTHS, dims: Sequence[int] = TINY_DIMS,
                 dilations: Tuple[int, int] = (2, 4), kernel_size: int = 7, ls_init_value: float = 1e-6):
        super().__init__()
        if len(depths) != 4 or len(dims) != 4 or min(depths) < 1:
            raise ValueError(f"depths and dims must be four numbers (depths >= 1), got {tuple(depths)}, {tuple(dims)}")
        d2, d3 = dilations
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), nn.LayerNorm(dims[0], eps=LN_EPS))  # H/4
        self.stages = nn.Sequential(
            ConvNeXtStage(dims[0], dims[0], depths[0], 1, (1, 1), kernel_size, ls_init_value),
            ConvNeXtStage(dims[0], dims[1], depths[1], 2, (1, 1), kernel_size, ls_init_value),     # H/8
            ConvNeXtStage(dims[1], dims[2], depths[2], 1, (1, d2), kernel_size, ls_init_value),
            ConvNeXtStage(dims[2], dims[3], depths[3], 1, (d2, d3), kernel_size, ls_init_value))
        self.depths, self.dims = tuple(depths), tuple(dims)
        self.stage_channels = (dims[1], dims[2], dims[3])
        self.stage_dilations = (1, d2, d3)
        for m in self.modules():  # timm's and torchvision's initialisation
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def load_pretrained(self, state_dict: Mapping[str, torch.Tensor]) -> List[str]:
        """A timm ``convnext_*`` state_dict, or a torchvision ``convnext_*`` one (``features.*``,
        renamed to timm's keys); returns the ImageNet head's keys, which are not used."""
        if any(key.removeprefix("module.").startswith("features.") for key in state_dict):
            state_dict = torchvision_to_timm(state_dict)
        return load_matching(self, state_dict, lambda key: key.startswith("head."), "convnext")

    def stage_modules(self):
        return [self.stem, self.stages[0], self.stages[1]], [self.stages[2]], [self.stages[3]]

    def stage1(self, images: torch.Tensor) -> torch.Tensor:
        x = run_sequential(DenseFeatures(images), self.stem)     # [B, dims0, H/4, W/4]
        return self.stages[1](self.stages[0](x)).to_dense()      # [B, dims1, H/8, W/8]

    def stage2(self, x: Features) -> Features:
        return self.stages[2](x)                                 # [B, dims2, h, w]

    def stage3(self, x: Features) -> Features:
        return self.stages[3](x)                                 # [B, dims3, h, w]


_TV_BLOCK = {"0": "conv_dw", "2": "norm", "3": "mlp.fc1", "5": "mlp.fc2"}


def torchvision_to_timm(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A torchvision ConvNeXt state_dict with timm's keys: ``features.0`` -> ``stem``,
    ``features.{1,3,5,7}.j.block.{0,2,3,5}`` -> ``stages.{0-3}.blocks.j.{conv_dw,norm,mlp.fc1,mlp.fc2}``,
    ``layer_scale [C, 1, 1]`` -> ``gamma [C]``, ``features.{2,4,6}`` -> ``stages.{1-3}.downsample``,
    ``classifier.{0,2}`` -> ``head.{norm,fc}``. Other keys (and a ``module.`` prefix) pass through."""
    out = {}
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key
        match = re.match(r"features\.(\d+)\.(.*)", key)
        if key.startswith("classifier."):
            key = key.replace("classifier.0.", "head.norm.").replace("classifier.2.", "head.fc.")
        elif match and match[1] == "0":
            key = f"stem.{match[2]}"
        elif match and int(match[1]) % 2 == 0:
            key = f"stages.{int(match[1]) // 2}.downsample.{match[2]}"
        elif match:
            block = re.match(r"(\d+)\.(?:block\.(\d+)\.(.*)|layer_scale)$", match[2])
            if block is None:
                raise ValueError(f"not a torchvision ConvNeXt key: {key}")
            stage = f"stages.{int(match[1]) // 2}.blocks.{block[1]}"
            if block[2] is None:
                key, value = f"{stage}.gamma", value.reshape(-1)
            else:
                key = f"{stage}.{_TV_BLOCK.get(block[2], 'block.' + block[2])}.{block[3]}"
        out[key] = value
    return out


@register_backbone("convnext_tiny", weights_layout="torchvision", weights_file="convnext_tiny-983f1562.pth",
                   small_args={"dims": (16, 24, 32, 40), "depths": (1, 1, 2, 1)})
def convnext_tiny(depths: Sequence[int] = TINY_DEPTHS, dims: Sequence[int] = TINY_DIMS,
                  dilations: Tuple[int, int] = (2, 4)) -> ConvNeXtOS8:
    """ConvNeXt-T (28.6 M parameters with its ImageNet head, 27.8 M without): stage channels
    192 / 384 / 768. ImageNet normalisation, as timm's and torchvision's weights expect."""
    return ConvNeXtOS8(tuple(depths), tuple(dims), tuple(dilations))
