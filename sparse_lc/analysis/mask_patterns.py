"""Synthetic hard-pixel masks with exact shares, for benchmarks that fix the sparsity.

Real hard pixels gather in bands along object boundaries; ``clustered`` masks imitate that:
the pixels nearest the zero level set of a smooth random field (contour bands). ``scattered``
masks pick pixels independently at random, the easy case for a submanifold conv (few active
neighbours), which overstates its speed.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

PATTERNS = ("clustered", "scattered")


def _score(shape: Tuple[int, int, int], pattern: str, generator: torch.Generator) -> torch.Tensor:
    """``[B, H, W]``: lower = chosen earlier. Clustered: distance to a random contour."""
    batch, height, width = shape
    if pattern == "scattered":
        return torch.rand(shape, generator=generator)
    if pattern != "clustered":
        raise ValueError(f"mask pattern must be one of {PATTERNS}, got {pattern!r}")
    coarse = torch.randn(batch, 1, max(2, height // 8), max(2, width // 8), generator=generator)
    field = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)[:, 0]
    return field.abs() + 1e-3 * torch.rand(shape, generator=generator)  # the jitter breaks ties


def nested_masks(shape: Tuple[int, int, int], shares: Sequence[float], pattern: str = "clustered",
                 seed: int = 0) -> Tuple[torch.Tensor, ...]:
    """One bool mask ``[B, H, W]`` per share, each with exactly ``round(share * H * W)`` True
    pixels per image, each a subset of the one before (shares must not increase)."""
    if any(b > a for a, b in zip(shares, shares[1:])) or not all(0 <= s <= 1 for s in shares):
        raise ValueError(f"shares must lie in [0, 1] and not increase, got {list(shares)}")
    order = _score(shape, pattern, torch.Generator().manual_seed(seed)).flatten(1).argsort(dim=1)
    pixels = shape[1] * shape[2]
    masks = []
    for share in shares:
        flat = torch.zeros(shape[0], pixels, dtype=torch.bool)
        flat.scatter_(1, order[:, :round(share * pixels)], True)
        masks.append(flat.view(shape))
    return tuple(masks)
