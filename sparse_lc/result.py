"""What one forward pass of a :class:`~sparse_lc.cascade.LayerCascade` returns."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from .assembly import assemble_labels, spread_cells, upsample_logits


@dataclass
class CascadeResult:
    """What one forward pass of a :class:`LayerCascade` returns (h, w = feature grid, H/8 x W/8).

    labels:        ``[B, H, W]`` int64: the top class of the final logits at input resolution
                   (computed without them: :func:`sparse_lc.assembly.assemble_labels`).
    decided:       ``[B, K, h, w]``: each cell's logits from the stage that decided it.
    size:          ``(H, W)``, the input size.
    stage_logits:  three ``[B, K, h, w]`` maps, one per stage; zero where the stage did not compute.
    active_masks:  three ``[B, h, w]`` bool: the pixels each stage computed (stage 1: all).
    hard_masks:    two ``[B, h, w]`` bool: still undecided after stage 1 and after stage 2.
    stage_map:     ``[B, h, w]`` uint8: which stage (1, 2, 3) decided each pixel.

    The final logits at input resolution, ``[B, K, H, W]``, are not held (for a large image they
    are the largest tensor of the run): :attr:`logits` computes them on each access.
    """

    decided: torch.Tensor
    size: Tuple[int, int]
    stage_logits: Tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    active_masks: Tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    hard_masks: Tuple[torch.Tensor, torch.Tensor]
    stage_map: torch.Tensor
    _labels: Optional[torch.Tensor] = None

    @property
    def labels(self) -> torch.Tensor:
        """``[B, H, W]`` int64: the top class of :attr:`logits` (assembled once, on first access,
        unless the forward pass already did)."""
        if self._labels is None:
            self._labels = assemble_labels(self.decided, self.size)
        return self._labels

    @property
    def logits(self) -> torch.Tensor:
        """``[B, K, H, W]`` final logits at input resolution: :attr:`decided` upsampled
        (bilinear) to the padded input and cropped. Computed on each access (with gradient,
        when the run has one); :attr:`labels` is their top class."""
        return upsample_logits(self.decided, self.size)

    @property
    def received_masks(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Three ``[B, h, w]`` bool: the pixels each stage classifies (stage 1: all, stage 2:
        hard_1, stage 3: hard_2). A stage's loss and its calibration cover exactly these; halo
        pixels, computed only as context, are not among them."""
        return (torch.ones_like(self.hard_masks[0]), *self.hard_masks)

    @property
    def stage_counts(self) -> torch.Tensor:
        """``[B, 3]`` int64: feature-grid pixels decided by stage 1, 2 and 3 in each image."""
        return torch.stack([(self.stage_map == s).flatten(1).sum(1) for s in (1, 2, 3)], dim=1)

    @property
    def stage_shares(self) -> Tuple[float, float, float]:
        """Share of all feature-grid pixels of the batch decided by each stage (sums to 1)."""
        counts = self.stage_counts.sum(0).double()
        return tuple((counts / counts.sum()).tolist())

    def stage_map_at(self, size: Tuple[int, int]) -> torch.Tensor:
        """``[B, H, W]`` uint8: ``stage_map`` at ``size = (H, W)``, e.g. the input size, for drawing:
        each feature cell on the 8 x 8 input pixels it came from (the map covers the padded input)."""
        return spread_cells(self.stage_map, size)
