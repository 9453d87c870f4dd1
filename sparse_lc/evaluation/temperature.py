"""Calibrated stage confidences: temperature scaling, expected calibration error, reliability.

A stage's top softmax score is only a probability of being right if the stage is calibrated.
Temperature scaling (Guo et al., 2017) divides a stage's logits by one scalar T fitted to
minimise the negative log-likelihood on held-out pixels; it never changes a stage's labels.

Each stage is fitted and measured on the pixels it classifies in the cascade
(:attr:`CascadeResult.received_masks`: all pixels for stage 1, the hard ones for stages 2 and
3), on the feature grid, against the label at each cell's centre (as training's loss).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..cascade import LayerCascade
from ..data import IGNORE_INDEX, SegDataset, labels_on_grid
from ..result import CascadeResult
from ..rho import Rho
from ..utils import eval_mode

ECE_BINS = 15
T_MIN, T_MAX = 0.05, 20.0  # fitted temperatures are kept in this range


class Reliability:
    """Per-bin sums for a reliability diagram: ``data[bin] = (pixels, sum of confidence,
    correct pixels)`` over ``bins`` equal-width confidence bins ``((i-1)/bins, i/bins]``."""

    def __init__(self, bins: int = ECE_BINS, data: Optional[torch.Tensor] = None):
        self.bins = bins
        self.data = torch.zeros(bins, 3, dtype=torch.float64) if data is None else data

    def add(self, confidence: torch.Tensor, correct: torch.Tensor) -> None:
        """Add pixels: ``confidence`` (float) and ``correct`` (bool) of the same shape."""
        confidence, correct = confidence.flatten().double().cpu(), correct.flatten().double().cpu()
        index = (confidence * self.bins).ceil().long().clamp(1, self.bins) - 1
        for column, values in enumerate((torch.ones_like(confidence), confidence, correct)):
            self.data[:, column] += torch.bincount(index, values, minlength=self.bins)

    def ece(self) -> Optional[float]:
        """Expected calibration error: sum over bins of (share of pixels) x |accuracy - confidence|."""
        count, confidence, correct = self.data.unbind(1)
        total = float(count.sum())
        return float((correct - confidence).abs().sum()) / total if total > 0 else None

    def curve(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per bin: pixel count, mean confidence and accuracy (NaN for an empty bin)."""
        count, confidence, correct = self.data.unbind(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return count.numpy(), (confidence / count).numpy(), (correct / count).numpy()


def stage_pixels(result: CascadeResult, labels: torch.Tensor
                 ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """For each stage, ``(logits [N_k, K], labels [N_k])`` of the labelled grid pixels it
    classified in ``result``; ``labels`` is ``[B, H, W]`` at input resolution."""
    grid = labels_on_grid(labels)  # [B, h, w]
    out = []
    for logits, received in zip(result.stage_logits, result.received_masks):
        keep = received & (grid != IGNORE_INDEX)
        out.append((logits.permute(0, 2, 3, 1)[keep], grid[keep]))
    return out


def add_reliability(result: CascadeResult, labels: torch.Tensor, temperatures: Sequence[float],
                    into: Sequence[Reliability]) -> None:
    """Add the pixels each stage classified in ``result`` to ``into[k]``, with confidences
    computed at ``temperatures[k]``."""
    for (logits, target), temperature, reliability in zip(stage_pixels(result, labels), temperatures, into):
        _add_pixels(reliability, logits, target, temperature)


def _add_pixels(reliability: Reliability, logits: torch.Tensor, labels: torch.Tensor,
                temperature: float) -> None:
    if labels.numel():
        confidence, prediction = (logits / temperature).softmax(dim=1).max(dim=1)
        reliability.add(confidence, prediction == labels)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T > 0 minimising the mean NLL of ``softmax(logits / T)`` (``[N, K]``, ``[N]``).

    Optimises log T with L-BFGS in float64 (the NLL is convex in 1/T). Pixels that are all
    right (or all wrong) have no finite optimum, so the result is kept within
    [``T_MIN``, ``T_MAX``]; with no pixel it returns 1.
    """
    if labels.numel() == 0:
        return 1.0
    logits, labels = logits.detach().double(), labels.long()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return min(max(float(log_t.detach().exp()), T_MIN), T_MAX)


@torch.no_grad()
def collect_stage_pixels(model: LayerCascade, dataset: SegDataset, rho: Rho,
                         max_pixels_per_image: int = 4096, progress: bool = True
                         ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Run the uncalibrated cascade (T = 1) at ``rho`` over ``dataset`` and collect, for each
    stage, the logits and labels of the pixels it classified (at most ``max_pixels_per_image``
    per image and stage, drawn at random with a fixed seed, so memory stays bounded)."""
    temperatures, model.temperatures = model.temperatures, (1.0, 1.0, 1.0)
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)
    collected: List[List[Tuple[torch.Tensor, torch.Tensor]]] = [[], [], []]
    try:
        with eval_mode(model):
            for index in tqdm(range(len(dataset)), desc="calibration pixels", unit="img", disable=not progress):
                image, label = dataset[index]
                result = model(image[None].to(device), rho=rho, labels=False)  # stage logits only
                for k, (logits, target) in enumerate(stage_pixels(result, label[None].to(device))):
                    if target.numel() > max_pixels_per_image:
                        keep = torch.randperm(target.numel(), generator=gen)[:max_pixels_per_image]
                        logits, target = logits[keep.to(device)], target[keep.to(device)]
                    collected[k].append((logits.float().cpu(), target.cpu()))
    finally:
        model.temperatures = temperatures
    k = model.num_classes
    return [(torch.cat([logits for logits, _ in pairs]) if pairs else torch.zeros(0, k),
             torch.cat([t for _, t in pairs]) if pairs else torch.zeros(0, dtype=torch.long))
            for pairs in collected]


def fit_temperatures(pixels: Sequence[Tuple[torch.Tensor, torch.Tensor]]) -> Tuple[float, float, float]:
    """One temperature per stage from :func:`collect_stage_pixels`' output."""
    return tuple(fit_temperature(logits, labels) for logits, labels in pixels)


def reliability_of(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> Reliability:
    """The reliability bins (hence the ECE) of ``softmax(logits / temperature)`` on ``[N, K]``
    logits and ``[N]`` labels."""
    reliability = Reliability()
    _add_pixels(reliability, logits, labels, temperature)
    return reliability
