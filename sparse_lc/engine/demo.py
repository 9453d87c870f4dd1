"""A small end-to-end run: one image, several rho, sparse against dense, per-stage shares."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import torch

from ..cascade import CascadeResult, LayerCascade, top_confidence


@dataclass
class DemoRow:
    rho: float
    shares: Tuple[float, float, float]   # pixels decided by stage 1, 2, 3
    sparse_s: float                      # seconds, sparse execution
    dense_s: float                       # seconds, dense reference execution
    max_abs_diff: float                  # largest |sparse - dense| over the final logits


def timed(model: LayerCascade, images: torch.Tensor, rho: float, execution: str) -> Tuple[CascadeResult, float]:
    start = time.perf_counter()
    result = model(images, rho=rho, execution=execution)
    return result, time.perf_counter() - start


def confidence_quantiles(model: LayerCascade, images: torch.Tensor, qs: Sequence[float]) -> List[float]:
    """Quantiles of stage 1's top softmax score: rho values that split an untrained model's pixels."""
    logits = model(images, rho=0.0).stage_logits[0]
    return torch.quantile(top_confidence(logits).flatten().double(), torch.tensor(qs, dtype=torch.double)).tolist()


@torch.no_grad()
def run_demo(model: LayerCascade, images: torch.Tensor, rhos: Sequence[float]) -> List[DemoRow]:
    """For each rho: run sparse and dense on ``images``, report shares, times and agreement."""
    model.eval()
    model(images, rho=1.0)  # warm-up: first-call allocations do not count
    rows = []
    for rho in rhos:
        sparse, sparse_s = timed(model, images, rho, "sparse")
        dense, dense_s = timed(model, images, rho, "dense")
        diff = float((sparse.logits - dense.logits).abs().max())
        rows.append(DemoRow(rho, sparse.stage_shares, sparse_s, dense_s, diff))
    return rows
