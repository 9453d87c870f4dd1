"""A calibrated operating point: per-stage temperatures and thresholds, kept beside a checkpoint.

``sparse-lc calibrate CONFIG CKPT`` fits the temperatures and picks ``(rho_1, rho_2)`` on
held-out data, then writes them to ``CKPT_STEM.calibration.json`` next to the checkpoint
(``CKPT_STEM.halo2.calibration.json`` for a model run with halo 2: each halo has its own
thresholds); the checkpoint itself is never rewritten. Whatever loads the checkpoint through
:func:`sparse_lc.load_model` (segment, eval, profile, bench) applies it, unless told not to.
The file records the SHA-256 of the checkpoint and the halo it was chosen for; a file that
does not match the weights or the model being loaded is ignored with a warning, never applied.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import List, Optional

from .cascade import LayerCascade, canonical_rho, format_rho
from .checkpoint import CheckpointError, atomic_write, file_sha256


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
