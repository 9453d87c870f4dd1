"""Operating points: per-stage temperatures and thresholds, chosen on data and kept beside a checkpoint.

Choosing one (``sparse-lc calibrate``, :func:`calibrate`):

1. Run the uncalibrated cascade at the model's rho over the calibration split and fit one
   temperature per stage on the pixels that stage classifies (:mod:`.temperature`).
2. With those temperatures, run every pair of a threshold grid (:mod:`.thresholds`) and pick
   the pair the criterion asks for: the cheapest within ``max_drop`` mIoU points of the
   reference, or the most accurate within ``budget`` x the dense MACs.

The reference is the dense run of another model when one is given (e.g. the dense baseline
a cascade was fine-tuned against), else the best this model reaches on the grid: its own
dense run (rho = 1) or any pair, whichever is higher. (A cascade-fine-tuned model's stage 3
never learned the easy pixels, so its own dense run can be far below its cascade runs; a floor
under that would let almost anything through.)

Keeping it: :func:`save_operating_point` writes ``CKPT_STEM.calibration.json`` next to the
checkpoint (``CKPT_STEM.halo2.calibration.json`` for a model run with halo 2: each halo has its
own thresholds); the checkpoint itself is never rewritten. Whatever loads the checkpoint
through :func:`sparse_lc.load_model` (segment, eval, profile, bench) applies it, unless told
not to. The file records the SHA-256 of the checkpoint and the halo it was chosen for; a file
that does not match the weights or the model being loaded is ignored with a warning, never
applied.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import List, Optional, Sequence, Tuple

from ..cascade import LayerCascade
from ..checkpoint import CheckpointError, atomic_write, file_sha256
from ..data import SegDataset
from ..rho import canonical_rho, format_rho
from .temperature import Reliability, collect_stage_pixels, fit_temperatures, reliability_of
from .thresholds import DEFAULT_GRID, ThresholdPoint, choose_thresholds, explore_thresholds, pareto_front


@dataclass
class OperatingPoint:
    """What calibration chose for one checkpoint, and the evidence it chose it on."""

    temperatures: List[float]             # one per stage, applied before the confidence test
    rho: List[float]                      # [rho_1, rho_2]
    halo: int                             # the model.halo it was chosen for
    criterion: str                        # "max_drop=1" or "budget=0.5"
    miou: float                           # at this point, on the calibration split
    macs_ratio: float                     # cascade MACs / dense MACs
    stage_share: List[float]              # pixels decided by each stage
    reference_miou: float                 # what max_drop is measured from
    reference: str                        # where reference_miou came from
    split: str                            # the data the choice was made on
    num_images: int
    ece_before: List[Optional[float]] = field(default_factory=list)  # per stage, 15 bins
    ece_after: List[Optional[float]] = field(default_factory=list)
    checkpoint_sha256: str = ""

    def describe(self) -> str:
        """One line for logs: thresholds, temperatures and what they were chosen for."""
        temps = ", ".join(f"{t:.3g}" for t in self.temperatures)
        return (f"rho {format_rho(self.rho)}, temperatures {temps} ({self.criterion} on "
                f"{self.num_images} {self.split} images: {100 * self.miou:.1f} mIoU at "
                f"{100 * self.macs_ratio:.0f}% of the dense MACs)")


def operating_point_path(checkpoint: str, halo: int = 0) -> str:
    """``work/final.pth`` -> ``work/final.calibration.json`` (``work/final.halo2.calibration.json``
    for halo 2)."""
    return os.path.splitext(checkpoint)[0] + (f".halo{halo}" if halo else "") + ".calibration.json"


def save_operating_point(point: OperatingPoint, checkpoint: str) -> str:
    """Write ``point`` beside ``checkpoint`` (atomically), tied to its bytes; returns the path."""
    point.checkpoint_sha256 = file_sha256(checkpoint)
    path = operating_point_path(checkpoint, point.halo)
    text = json.dumps(asdict(point), indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
    return path


def read_operating_point(path: str) -> OperatingPoint:
    """Parse a calibration file; a malformed one raises CheckpointError naming it."""
    try:
        with open(path) as f:
            data = json.load(f)
        known = {f.name for f in fields(OperatingPoint)}
        point = OperatingPoint(**{k: v for k, v in data.items() if k in known})
        canonical_rho(point.rho)
        if len(point.temperatures) != 3 or not all(float(t) > 0 for t in point.temperatures):
            raise ValueError(f"temperatures must be three positive numbers, got {point.temperatures}")
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a calibration file ({e})") from None
    return point


def apply_operating_point(model: LayerCascade, point: OperatingPoint) -> None:
    """Set the model's temperatures and default thresholds from ``point``."""
    model.temperatures = point.temperatures
    model.rho = canonical_rho(point.rho)


def find_operating_point(model: LayerCascade, checkpoint: str) -> Optional[OperatingPoint]:
    """The calibration beside ``checkpoint`` for this model's halo if there is one and it fits
    these weights, else None; a file that does not fit raises CheckpointError saying why."""
    path = operating_point_path(checkpoint, model.halo)
    if not os.path.isfile(path):
        return None
    point = read_operating_point(path)
    if point.checkpoint_sha256 != file_sha256(checkpoint):
        raise CheckpointError(f"{path}: made for other weights than {checkpoint} (calibrate again)")
    if point.halo != model.halo:
        raise CheckpointError(f"{path}: chosen for halo {point.halo}, the model has halo {model.halo}")
    return point


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
