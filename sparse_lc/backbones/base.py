"""What a cascade backbone is: one network split into three stages at output stride 8."""
from __future__ import annotations

from typing import List, Tuple

import torch
from torch import nn

from ..ops import Features


class CascadeBackbone(nn.Module):
    """A backbone split into the three stages of a layer cascade.

    Stage 1 is dense and downsamples to output stride 8. Stages 2 and 3 keep that resolution
    (dilation, never stride), so they can run on the active pixels only: they take and return a
    feature container (:mod:`sparse_lc.ops`), dense or sparse.

    Subclasses set ``stage_channels`` (output channels of each stage) and ``stage_dilations``
    (dilation of each stage's 3x3 convs; the stage's head uses the same, sharing its rulebook).
    """

    output_stride: int = 8
    stage_channels: Tuple[int, int, int]
    stage_dilations: Tuple[int, int, int]

    def stage_modules(self) -> Tuple[List[nn.Module], List[nn.Module], List[nn.Module]]:
        """The modules of each stage (to freeze a stage, or to attribute work to it)."""
        raise NotImplementedError

    def stage1(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W] -> [B, C1, H/8, W/8]`` (H, W multiples of 8)."""
        raise NotImplementedError

    def stage2(self, x: Features) -> Features:
        """``[B, C1, h, w] -> [B, C2, h, w]`` on the active pixels of ``x``."""
        raise NotImplementedError

    def stage3(self, x: Features) -> Features:
        """``[B, C2, h, w] -> [B, C3, h, w]`` on the active pixels of ``x``."""
        raise NotImplementedError
