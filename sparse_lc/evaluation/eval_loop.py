"""Evaluation the way the paper reports it: mIoU from a confusion matrix, and what each stage did.

For each rho, over a dataset (whole images, batch 1, any size):

* mIoU, per-class IoU, pixel accuracy, mean accuracy, from one confusion matrix (label 255
  ignored). A class absent from both the labels and the predictions has no IoU (None) and is
  left out of the mean, as in mmsegmentation.
* ``stage_share``: the share of pixels (input resolution) decided by each stage; sums to 1.
* ``stage_accuracy``: pixel accuracy over the labelled pixels each stage decided.
* ``boundary_share``: the share of the pixels decided by stages 2-3 that lie within 3 pixels
  of a label boundary (the paper's observation: hard pixels gather on boundaries);
  ``boundary_share_by_stage`` gives it per stage.
* ``macs_cascade``: mean MACs per image of the cascade as run (sparse); ``macs_dense``: of the
  same model run dense (every stage and head on every pixel).
* ``ece``: each stage's expected calibration error (15 bins) on the pixels it classified, with
  the model's temperatures; ``ece_uncalibrated``: the same at T = 1; ``reliability``: the bins
  of both (pixels, mean confidence, accuracy) for reliability diagrams.

Under torchrun each process evaluates every world_size-th image and the counts are summed.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..analysis import DenseMacs, count_macs
from ..cascade import LayerCascade
from ..config import imported_modules
from ..data import IGNORE_INDEX, SegDataset
from ..result import CascadeResult
from ..rho import Rho, canonical_rho
from ..utils import eval_mode
from ..utils.distributed import DistInfo, all_reduce_sum
from .metrics import boundary_mask, confusion_matrix, metrics_from_confusion, ratio
from .temperature import ECE_BINS, Reliability, add_reliability


@dataclass
class EvalResult:
    rho: Rho                    # one threshold, or [rho_1, rho_2]
    miou: float
    per_class_iou: List[Optional[float]]
    pixel_acc: float
    mean_acc: float
    stage_share: List[float]
    stage_accuracy: List[Optional[float]]
    boundary_share: Optional[float]
    boundary_share_by_stage: List[Optional[float]]
    macs_cascade: float
    macs_dense: float
    num_images: int
    temperatures: List[float]
    ece: List[Optional[float]]
    ece_uncalibrated: List[Optional[float]]
    reliability: Dict[str, List[List[List[float]]]]  # "calibrated" / "uncalibrated": [stage][bin] = [n, conf, acc]
    custom_imports: Dict[str, str] = field(default_factory=dict)  # user code this run imported: module -> file

    def to_json(self) -> Dict:
        return asdict(self)


class EvalCounts:
    """Everything summed over images for one rho, in one tensor (one all-reduce)."""

    _STAGE_STATS = 4 * 3                   # per stage: pixels, labelled, correct, near boundary
    _RELIABILITY = 2 * 3 * ECE_BINS * 3    # (uncalibrated, calibrated) x stage x bin x 3

    def __init__(self, num_classes: int, temperatures: Sequence[float]):
        self.k = num_classes
        self.temperatures = tuple(temperatures)
        # confusion K*K | stage stats | reliability | macs cascade, dense, images
        self.data = torch.zeros(num_classes ** 2 + self._STAGE_STATS + self._RELIABILITY + 3, dtype=torch.float64)

    def _reliability(self) -> List[List[Reliability]]:
        """Views into ``data``: [uncalibrated, calibrated][stage]."""
        start = self.k ** 2 + self._STAGE_STATS
        block = self.data[start:start + self._RELIABILITY].view(2, 3, ECE_BINS, 3)
        return [[Reliability(ECE_BINS, block[c, s]) for s in range(3)] for c in range(2)]

    def add(self, result: CascadeResult, label: torch.Tensor, boundary: torch.Tensor,
            macs_cascade: int, macs_dense: int) -> None:
        """Add one image: ``result`` of a batch of 1, ``label`` and ``boundary`` ``[H, W]``."""
        pred = result.labels[0]
        stage_map = result.stage_map_at(tuple(label.shape))[0]
        stages = [stage_map == s for s in (1, 2, 3)]
        labelled = label != IGNORE_INDEX
        k2 = self.k ** 2
        self.data[:k2] += confusion_matrix(pred, label, self.k).flatten().double().cpu()
        stats = [[int(s.sum()) for s in stages],
                 [int((s & labelled).sum()) for s in stages],
                 [int((s & labelled & (pred == label)).sum()) for s in stages],
                 [int((s & boundary).sum()) for s in stages]]
        self.data[k2:k2 + self._STAGE_STATS] += torch.tensor(stats, dtype=torch.float64).flatten()
        uncalibrated, calibrated = self._reliability()
        add_reliability(result, label[None], (1.0, 1.0, 1.0), uncalibrated)
        add_reliability(result, label[None], self.temperatures, calibrated)
        self.data[-3:] += torch.tensor([macs_cascade, macs_dense, 1.0], dtype=torch.float64)

    def result(self, rho: Rho) -> EvalResult:
        k2 = self.k ** 2
        conf = self.data[:k2].reshape(self.k, self.k)
        pixels, labelled, correct, boundary = self.data[k2:k2 + self._STAGE_STATS].view(4, 3).tolist()
        macs_cascade, macs_dense, images = self.data[-3:].tolist()
        uncalibrated, calibrated = self._reliability()
        total = sum(pixels)
        return EvalResult(
            rho=list(rho) if isinstance(rho, tuple) else rho, **metrics_from_confusion(conf),
            stage_share=[p / total for p in pixels],
            stage_accuracy=[ratio(c, n) for c, n in zip(correct, labelled)],
            boundary_share=ratio(boundary[1] + boundary[2], pixels[1] + pixels[2]),
            boundary_share_by_stage=[ratio(b, p) for b, p in zip(boundary, pixels)],
            macs_cascade=macs_cascade / images, macs_dense=macs_dense / images, num_images=int(images),
            temperatures=list(self.temperatures),
            ece=[r.ece() for r in calibrated], ece_uncalibrated=[r.ece() for r in uncalibrated],
            reliability={"uncalibrated": [r.data.tolist() for r in uncalibrated],
                         "calibrated": [r.data.tolist() for r in calibrated]},
            custom_imports=imported_modules())


@torch.no_grad()
def evaluate(model: LayerCascade, dataset: SegDataset, rhos: Sequence[Rho],
             info: Optional[DistInfo] = None, progress: bool = True) -> List[EvalResult]:
    """Evaluate ``model`` at every rho in ``rhos`` (one trained model, no retraining); each
    rho is one threshold or a pair (:data:`~sparse_lc.rho.Rho`). ``info``: this process's
    share of the images under torchrun (default: one process, every image)."""
    info = DistInfo() if info is None else info
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    dense_macs = DenseMacs(model)
    rhos = list(dict.fromkeys(canonical_rho(rho) for rho in rhos))  # 0.9 and [0.9, 0.9] are one
    counts = {rho: EvalCounts(model.num_classes, model.temperatures) for rho in rhos}
    indices = range(info.rank, len(dataset), info.world_size)
    with eval_mode(model):
        for index in tqdm(indices, desc="eval", unit="img", disable=not (progress and info.is_main)):
            image, label = dataset[index]
            image, label = image[None].to(device, dtype), label.to(device)
            boundary = torch.from_numpy(boundary_mask(label.cpu().numpy().astype(np.uint8))).to(device)
            for rho in rhos:
                result, macs = count_macs(model, image, rho=rho)
                counts[rho].add(result, label, boundary, macs.total(), dense_macs(*label.shape))
    for c in counts.values():
        c.data = all_reduce_sum(c.data.to(device), info).cpu()
    return [counts[rho].result(rho) for rho in rhos]
