"""The cascade's training loss: each stage's cross-entropy over the pixels it decides."""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

from ..data import IGNORE_INDEX, labels_on_grid
from ..result import CascadeResult


def cascade_loss(result: CascadeResult, labels: torch.Tensor,
                 weights: Sequence[float] = (1.0, 1.0, 1.0)) -> Tuple[torch.Tensor, torch.Tensor]:
    """``sum_k weight_k * CE_k``, where CE_k averages stage k's cross-entropy over the labelled
    pixels stage k decides: all pixels for stage 1, the hard pixels of stage 1 for stage 2, those
    still hard for stage 3. (With rho = 1 every stage decides every pixel: deep supervision.)

    Returns the total and the three per-stage losses (detached; 0 for a stage with no pixel).
    """
    grid = labels_on_grid(labels)
    total = result.stage_logits[0].new_zeros(())
    per_stage = []
    for logits, mask, weight in zip(result.stage_logits, result.received_masks, weights):
        target = torch.where(mask, grid, torch.full_like(grid, IGNORE_INDEX))
        count = int((target != IGNORE_INDEX).sum())
        if count == 0 or weight == 0:
            per_stage.append(0.0)
            continue
        loss = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum") / count
        total = total + weight * loss
        per_stage.append(float(loss.detach()))
    return total, torch.tensor(per_stage)
