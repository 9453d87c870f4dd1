"""MACs of cascade runs (what the sparse path really does) and of the dense model."""
from __future__ import annotations

from typing import Tuple

import torch

from ..cascade import CascadeResult, LayerCascade
from ..ops import MacCounter

_PROBE = 64  # side of the probe image used to measure the dense model's MACs per pixel


def count_macs(model: LayerCascade, images: torch.Tensor, **forward_kwargs) -> Tuple[CascadeResult, MacCounter]:
    """Run ``model(images, **forward_kwargs)`` and count the MACs of every conv and norm it ran."""
    with MacCounter(model) as counter:
        result = model(images, **forward_kwargs)
    return result, counter


class DenseMacs:
    """MACs of one image through the dense model (every stage and head on every pixel).

    Every layer's output grid is the padded input divided by its stride, so the dense MACs are
    exactly ``(MACs per padded input pixel) * H_pad * W_pad``; the constant is measured once,
    with a real dense run on a small probe image.
    """

    def __init__(self, model: LayerCascade):
        self.model = model
        self._per_pixel = None

    def __call__(self, height: int, width: int) -> int:
        if self._per_pixel is None:
            param = next(self.model.parameters())
            probe = torch.zeros(1, 3, _PROBE, _PROBE, device=param.device, dtype=param.dtype)
            with torch.no_grad():
                _, counter = count_macs(self.model, probe, rho=1.0, execution="dense")
            self._per_pixel = counter.total() / (_PROBE * _PROBE)
        padded = (-(-height // 8) * 8) * (-(-width // 8) * 8)
        return int(round(self._per_pixel * padded))
