"""What a cascade backbone is: one network split into three stages at output stride 8."""
from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Tuple

import torch
from torch import nn

from ..checkpoint import state_dict_mismatch
from ..layers import SegHead
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

    def make_head(self, stage: int, head_channels: int, num_classes: int) -> nn.Module:
        """The pixel classifier after stage ``stage`` (1, 2, 3): a :class:`SegHead` at the stage's
        width and dilation. A backbone may override it (e.g. an ASPP head on stage 3)."""
        return SegHead(self.stage_channels[stage - 1], head_channels, num_classes,
                       dilation=self.stage_dilations[stage - 1])

    def load_pretrained(self, state_dict: Mapping[str, torch.Tensor]) -> List[str]:
        """Load ImageNet weights in the layout of the backbone's source library; return the keys
        of ``state_dict`` that were not used (e.g. the ImageNet classifier). Raises ValueError
        naming the mismatching keys."""
        raise ValueError(f"backbone {type(self).__name__} takes no pretrained weights")

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


def load_matching(backbone: nn.Module, state_dict: Mapping[str, torch.Tensor], unused: Callable[[str], bool],
                  source: str) -> List[str]:
    """Load ``state_dict`` into ``backbone`` by name, leaving out the keys for which ``unused(key)``
    is True (returned, in order). A ``module.`` prefix (DataParallel checkpoints) is removed.
    Raises ValueError (``"not a matching {source} state_dict (...)"``) naming missing, unexpected
    and wrongly shaped keys."""
    kept: Dict[str, torch.Tensor] = {}
    dropped = []
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if unused(key):
            dropped.append(key)
        else:
            kept[key] = value
    mismatch = state_dict_mismatch(backbone.state_dict(), kept)
    if mismatch:
        raise ValueError(f"not a matching {source} state_dict ({mismatch})")
    backbone.load_state_dict(kept)
    return dropped
