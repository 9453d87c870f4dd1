"""``sparse-lc calibrate``: fit each stage's temperature, then choose (rho_1, rho_2) on data.

1. Run the uncalibrated cascade at the model's rho over the calibration split and fit one
   temperature per stage on the pixels that stage classifies (:mod:`.calibration`).
2. With those temperatures, run every pair of a threshold grid (:mod:`.thresholds`) and pick
   the pair the criterion asks for: the cheapest within ``max_drop`` mIoU points of the
   reference, or the most accurate within ``budget`` x the dense MACs.

The reference is the dense run of another model when one is given (e.g. the dense baseline
a cascade was fine-tuned against), else the best this model reaches on the grid: its own
dense run (rho = 1) or any pair, whichever is higher. (A cascade-fine-tuned model's stage 3
never learned the easy pixels, so its own dense run can be far below its cascade runs; a floor
under that would let almost anything through.)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from ..cascade import LayerCascade, canonical_rho
from ..data import SegDataset
from ..operating_point import OperatingPoint
from .calibration import Reliability, collect_stage_pixels, fit_temperatures, reliability_of
from .thresholds import DEFAULT_GRID, ThresholdPoint, choose_thresholds, explore_thresholds, pareto_front


@dataclass
class CalibrationReport:
    operating_point: OperatingPoint
    chosen: ThresholdPoint
    points: List[ThresholdPoint]          # every explored pair
    front: List[ThresholdPoint]           # their Pareto front (MACs against mIoU)
    reliability_before: List[Reliability]  # per stage, on the calibration pixels
    reliability_after: List[Reliability]

    def point(self, rho1: float, rho2: float) -> Optional[ThresholdPoint]:
        """The explored point of ``(rho1, rho2)``, if it was on the grid."""
        return next((p for p in self.points if p.rho == (float(rho1), float(rho2))), None)


def criterion_name(max_drop: Optional[float], budget: Optional[float]) -> str:
    return f"max_drop={max_drop:g}" if max_drop is not None else f"budget={budget:g}"


def calibrate(model: LayerCascade, dataset: SegDataset, max_drop: Optional[float] = None,
              budget: Optional[float] = None, reference_miou: Optional[float] = None,
              reference: str = "", grid: Sequence[float] = DEFAULT_GRID, split: str = "",
              progress: bool = True) -> CalibrationReport:
    """Calibrate ``model`` on ``dataset`` and choose its thresholds; the model is left with
    the fitted temperatures and the chosen rho. ``reference_miou`` (0-1) is the dense run
    of a reference model, described by ``reference``; ``None``: this model's best (see above)."""
    if (max_drop is None) == (budget is None):
        raise ValueError("give exactly one of max_drop and budget")
    pixels = collect_stage_pixels(model, dataset, model.rho, progress=progress)
    temperatures = fit_temperatures(pixels)
    before = [reliability_of(logits, labels) for logits, labels in pixels]
    after = [reliability_of(logits, labels, t) for (logits, labels), t in zip(pixels, temperatures)]
    previous, model.temperatures = model.temperatures, temperatures
    try:
        points = explore_thresholds(model, dataset, sorted({*map(float, grid), 1.0}), progress=progress)
        reference_miou, reference = _reference(points, reference_miou, reference)
        chosen = choose_thresholds(points, reference_miou, max_drop, budget)
    except BaseException:  # no pair met the criterion (or interrupted): leave the model as it was
        model.temperatures = previous
        raise
    model.rho = canonical_rho(chosen.rho)
    point = OperatingPoint(
        temperatures=list(temperatures), rho=list(chosen.rho), halo=model.halo,
        miou=chosen.miou, macs_ratio=chosen.macs_ratio, stage_share=chosen.stage_share,
        reference_miou=reference_miou, reference=reference, split=split, num_images=len(dataset),
        criterion=criterion_name(max_drop, budget),
        ece_before=[r.ece() for r in before], ece_after=[r.ece() for r in after])
    return CalibrationReport(point, chosen, points, pareto_front(points), before, after)


def _reference(points: Sequence[ThresholdPoint], miou: Optional[float], text: str) -> Tuple[float, str]:
    """The given reference, or this model's best: its dense run or its best pair."""
    if miou is not None:
        return miou, text
    dense = next(p for p in points if p.rho == (1.0, 1.0))
    best = max(points, key=lambda p: p.miou)
    if dense.miou >= best.miou:
        return dense.miou, "this model's dense run (rho = 1)"
    return best.miou, f"this model's best pair {list(best.rho)} (its dense run: {100 * dense.miou:.1f})"
