"""Multiply-accumulates: of one cascade run as it really ran, of the dense model, and per layer
and stage, the cascade against the dense run (``sparse-lc profile``).

The dense run is the same model with every stage and head on every pixel (``execution="dense"``,
rho = 1); its conv MACs equal ``torch.utils.flop_counter``'s count. The cascade run is the
sparse execution at the given rho; a submanifold conv's MACs are its rulebook pairs (centre
included) x C_in x C_out, which on the CPU equals what the flop counter sees spconv's torch.mm
calls do. Norms count one multiply-add per element. Data-dependent compute is a distribution:
with several images the numbers are means per image (detectron2's habit).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..assembly import STRIDE, grid_size
from ..cascade import LayerCascade
from ..ops import MacCounter
from ..result import CascadeResult
from ..rho import Rho
from ..utils import eval_mode

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
        cells_h, cells_w = grid_size(height, width)
        return int(round(self._per_pixel * cells_h * cells_w * STRIDE * STRIDE))


STAGES = ("stage1", "stage2", "stage3")


@dataclass
class LayerProfile:
    name: str
    stage: str
    kind: str              # conv or norm
    dense_macs: float
    sparse_macs: float
    active_fraction: float  # output positions the cascade computed / positions of the full map


@dataclass
class StageProfile:
    name: str
    dense_macs: float
    sparse_macs: float
    active_fraction: float  # pixels the stage computed / all pixels


@dataclass
class ProfileReport:
    rho: Rho
    num_images: int
    dense_macs: float
    sparse_macs: float
    ratio: float            # dense / sparse
    stages: List[StageProfile]
    layers: List[LayerProfile]

    def to_json(self) -> Dict:
        return asdict(self)


def layer_stages(model: LayerCascade) -> Dict[str, str]:
    """Module name -> the stage it belongs to, for every module of the model."""
    owner = {}
    for k, stage in enumerate(STAGES, start=1):
        for top in model.stage_modules(k):
            for module in top.modules():
                owner[id(module)] = stage
    return {name: owner[id(m)] for name, m in model.named_modules() if id(m) in owner}


@torch.no_grad()
def profile_macs(model: LayerCascade, images: Sequence[torch.Tensor], rho: Optional[Rho] = None,
                 **forward_kwargs) -> ProfileReport:
    """Profile ``model`` on each ``[B, 3, H, W]`` (or ``[3, H, W]``) normalised image batch at
    ``rho`` (``None``: the model's); ``forward_kwargs`` (e.g. ``hard_masks``) go to the cascade
    run. MACs are means per image; active fractions are pixel-weighted over all images (the
    same definition for layers and stages)."""
    rho = model.rho if rho is None else rho
    stage_of = layer_stages(model)
    totals: Dict[str, List[float]] = {}  # name -> [dense, sparse, active, positions]
    kinds: Dict[str, str] = {}
    active, pixels, num_images = torch.zeros(3, dtype=torch.float64), 0, 0
    param = next(model.parameters())
    with eval_mode(model):
        for image in images:
            image = image.to(param.device, param.dtype)
            _, dense = count_macs(model, image, rho=1.0, execution="dense")
            result, sparse = count_macs(model, image, rho=rho, execution="sparse", **forward_kwargs)
            for r in dense.by_layer().values():
                totals.setdefault(r.name, [0.0, 0.0, 0.0, 0.0])[0] += r.macs
                totals[r.name][3] += r.positions
                kinds[r.name] = r.kind
            for r in sparse.by_layer().values():
                totals[r.name][1] += r.macs
                totals[r.name][2] += r.active
            active += torch.tensor([float(m.sum()) for m in result.active_masks], dtype=torch.float64)
            pixels += result.active_masks[0].numel()
            num_images += result.stage_map.shape[0]
    n = num_images
    layers = [LayerProfile(name, stage_of[name], kinds[name], d / n, s / n, a / p if p else 0.0)
              for name, (d, s, a, p) in totals.items()]
    stages = [StageProfile(stage, sum(x.dense_macs for x in layers if x.stage == stage),
                           sum(x.sparse_macs for x in layers if x.stage == stage), float(active[k]) / pixels)
              for k, stage in enumerate(STAGES)]
    dense_total, sparse_total = sum(s.dense_macs for s in stages), sum(s.sparse_macs for s in stages)
    return ProfileReport(rho, n, dense_total, sparse_total, dense_total / sparse_total, stages, layers)
