"""The confidence thresholds of a cascade: when a pixel is easy, and how rho is written.

After stage k, a pixel whose top softmax score (of the logits divided by the stage's
temperature) exceeds rho_k is *easy*: its label is final. Pixels a stage computes only as context
(the halo) are the hard ones grown by a square window.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F

Rho = Union[float, Sequence[float]]
"""A confidence threshold: one number for both tests, or ``(rho_1, rho_2)``: stage 1 -> 2, 2 -> 3."""


def top_confidence(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``[B, K, h, w] -> [B, h, w]``: the top softmax score of ``logits / temperature`` at each
    pixel (no gradient; half-precision logits are scored in float32, so that thresholds near 1
    keep their meaning)."""
    logits = logits.detach()
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logits = logits if temperature == 1.0 else logits / temperature
    return logits.softmax(dim=1).amax(dim=1)


def rho_pair(rho: Rho) -> Tuple[float, float]:
    """``(rho_1, rho_2)`` from one threshold or two; raises ValueError outside [0, 1]."""
    try:
        values = tuple(rho)
    except TypeError:  # a number of any kind: float, numpy scalar, 0-d tensor
        values = (rho, rho)
    if len(values) != 2:
        raise ValueError(f"rho must be one number or two (stage 1 -> 2, stage 2 -> 3), got {list(values)}")
    for value in values:
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"rho must be in [0, 1], got {value}")
    return float(values[0]), float(values[1])


def canonical_rho(rho: Rho) -> Union[float, Tuple[float, float]]:
    """A validated, hashable threshold: a float when both tests use the same, else a pair."""
    rho1, rho2 = rho_pair(rho)
    return rho1 if rho1 == rho2 else (rho1, rho2)


def format_rho(rho: Rho) -> str:
    """``"0.985"`` or ``"0.95/0.99"`` (rho_1/rho_2), for tables and titles."""
    rho1, rho2 = rho_pair(rho)
    return f"{rho1:g}" if rho1 == rho2 else f"{rho1:g}/{rho2:g}"


def grow_mask(mask: torch.Tensor, halo: int) -> torch.Tensor:
    """``[B, h, w]`` bool grown by ``halo`` pixels in every direction (a square window)."""
    if halo == 0:
        return mask
    grown = F.max_pool2d(mask[:, None].float(), 2 * halo + 1, stride=1, padding=halo)
    return grown[:, 0] > 0

