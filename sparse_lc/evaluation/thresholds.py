"""Choosing the thresholds (rho_1, rho_2) from data: an accuracy floor or a compute budget.

Every pair on a grid of thresholds is run as the real cascade (sparse execution, the model's
halo and temperatures) over a dataset, and measured as ``sparse-lc eval`` would: mIoU from a
confusion matrix, exact MACs, stage shares. The work of earlier stages is shared: per image,
stage 1 runs once, stage 2 once per rho_1, stage 3 once per distinct set of hard pixels.

From the explored points:

* ``max_drop=D``: the cheapest pair whose mIoU is at most D points below the reference;
* ``budget=B``: the most accurate pair whose MACs are at most B times the dense run's.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm import tqdm

from ..analysis import DenseMacs
from ..cascade import LayerCascade, pad_images
from ..data import SegDataset
from ..ops import MacCounter
from ..rho import rho_pair
from ..utils import eval_mode
from .eval_loop import EvalCounts, EvalResult
from .metrics import boundary_mask

#: Thresholds tried for each of rho_1 and rho_2 by default (1 = every pixel goes on).
DEFAULT_GRID = (0.5, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.985, 0.99, 0.995, 0.998, 0.999, 1.0)


@dataclass
class ThresholdPoint:
    """One explored pair and what the cascade did with it (means per image)."""

    rho: Tuple[float, float]
    miou: float
    macs: float            # cascade MACs per image
    macs_dense: float      # the same model, every stage on every pixel
    stage_share: List[float]

    @property
    def macs_ratio(self) -> float:
        return self.macs / self.macs_dense

    def to_json(self) -> Dict:
        return {**asdict(self), "rho": list(self.rho), "macs_ratio": self.macs_ratio}

    @classmethod
    def from_eval(cls, result: EvalResult) -> "ThresholdPoint":
        rho = result.rho if isinstance(result.rho, (list, tuple)) else (result.rho, result.rho)
        return cls(tuple(rho), result.miou, result.macs_cascade, result.macs_dense, result.stage_share)


@torch.no_grad()
def explore_thresholds(model: LayerCascade, dataset: SegDataset, grid: Sequence[float] = DEFAULT_GRID,
                       progress: bool = True) -> List[ThresholdPoint]:
    """Run the cascade at every ``(rho_1, rho_2)`` of ``grid x grid`` over ``dataset``.

    The numbers equal :func:`~sparse_lc.evaluation.evaluate` at each pair (a test checks it), at a
    fraction of the cost.
    """
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    dense_macs = DenseMacs(model)
    grid = sorted({rho_pair(r)[0] for r in grid})  # validated: each in [0, 1]
    pairs = [(r1, r2) for r1 in grid for r2 in grid]
    counts = {pair: EvalCounts(model.num_classes, model.temperatures) for pair in pairs}
    with eval_mode(model):
        for index in tqdm(range(len(dataset)), desc="thresholds", unit="img", disable=not progress):
            image, label = dataset[index]
            image, label = image[None].to(device, dtype), label.to(device)
            boundary = torch.from_numpy(boundary_mask(label.cpu().numpy().astype(np.uint8))).to(device)
            dense = dense_macs(*label.shape)
            for pair, (result, macs) in _cascade_runs(model, image, grid):
                counts[pair].add(result, label, boundary, macs, dense)
    return [ThresholdPoint.from_eval(counts[pair].result(pair)) for pair in pairs]


def _cascade_runs(model: LayerCascade, image: torch.Tensor, grid: Sequence[float]):
    """Yield ``((rho_1, rho_2), (CascadeResult, MACs))`` for every pair of ``grid``, sharing
    the stages that two pairs have in common."""
    size = tuple(image.shape[2:])
    with MacCounter(model) as count1:
        f1, logits1 = model.run_stage1(pad_images(image))
    confidence1 = model.confidence(logits1, 1)
    for rho1 in grid:
        hard1 = confidence1 <= rho1
        with MacCounter(model) as count2:
            x2, logits2, active2 = model.run_stage2(f1, hard1, logits1)
        confidence2 = model.confidence(logits2, 2)
        previous: Optional[Tuple[torch.Tensor, Tuple[torch.Tensor, torch.Tensor], int]] = None
        for rho2 in grid:
            hard2 = hard1 & (confidence2 <= rho2)
            if previous is None or not torch.equal(previous[0], hard2):
                with MacCounter(model) as count3:
                    stage3 = model.run_stage3(x2, hard2, logits1)
                previous = (hard2, stage3, count3.total())
            logits3, active3 = previous[1]
            result = model.assemble(size, (logits1, logits2, logits3), (hard1, hard2), (active2, active3))
            yield (rho1, rho2), (result, count1.total() + count2.total() + previous[2])


def pareto_front(points: Sequence[ThresholdPoint]) -> List[ThresholdPoint]:
    """The points no other point beats on both MACs (fewer) and mIoU (higher), by MACs."""
    front: List[ThresholdPoint] = []
    for p in sorted(points, key=lambda p: (p.macs, -p.miou)):
        if not front or p.miou > front[-1].miou:
            front.append(p)
    return front


def choose_thresholds(points: Sequence[ThresholdPoint], reference_miou: float,
                      max_drop: Optional[float] = None, budget: Optional[float] = None) -> ThresholdPoint:
    """The pair the criterion picks (exactly one of ``max_drop`` in mIoU points, ``budget`` as
    a fraction of the dense MACs). Raises ValueError, naming the best there is, when no
    explored pair meets it."""
    if (max_drop is None) == (budget is None):
        raise ValueError("give exactly one of max_drop and budget")
    if max_drop is not None:
        floor = reference_miou - max_drop / 100.0
        ok = [p for p in points if p.miou >= floor]
        if not ok:
            best = max(points, key=lambda p: p.miou)
            raise ValueError(f"no thresholds on the grid keep mIoU above {100 * floor:.1f} (the reference "
                             f"{100 * reference_miou:.1f} minus {max_drop:g}); the best is {100 * best.miou:.1f} "
                             f"at rho {best.rho}")
        return min(ok, key=lambda p: (p.macs, -p.miou))
    ok = [p for p in points if p.macs_ratio <= budget]
    if not ok:
        cheapest = min(points, key=lambda p: p.macs_ratio)
        raise ValueError(f"no thresholds on the grid stay within {budget:g} x the dense MACs; the "
                         f"cheapest needs {cheapest.macs_ratio:.3f} x at rho {cheapest.rho}")
    return max(ok, key=lambda p: (p.miou, -p.macs))
