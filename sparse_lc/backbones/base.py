"""What a cascade backbone is (one network split into three stages at output stride 8), and
how backbones are registered and built by name (timm's habit)::

    @register_backbone("resnet18", weights_layout="torchvision", weights_file="resnet18-f37072fd.pth")
    def resnet18(dilations=(2, 4)) -> CascadeBackbone: ...

    build_backbone("resnet18", dilations=(2, 4))
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from ..checkpoint import state_dict_mismatch
from ..layers import SegHead
from ..ops import Features
from ..registry import Registry

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # RGB on the 0-255 scale: torchvision's ImageNet weights
IMAGENET_STD = (58.395, 57.12, 57.375)
WEIGHT_LAYOUTS = ("torchvision", "timm")


@dataclass(frozen=True)
class BackboneInfo:
    """What a backbone registers beside its factory: what its pretrained weights expect.

    pixel_mean, pixel_std: RGB normalisation (0-255 scale) of the images its ImageNet weights
                    were trained on; a config that does not set ``model.pixel_mean`` /
                    ``pixel_std`` gets these.
    weights_layout: the state_dict layout :meth:`CascadeBackbone.load_pretrained` takes
                    (``"torchvision"``, ``"timm"``), or None: no pretrained weights.
    weights_file:   the file name those weights usually come in (see docs/backbones.md).
    small_args:     factory arguments for a small instance of the same topology, for fast
                    checks (the equivalence tests, ``sparse-lc doctor``).
    """

    pixel_mean: Tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: Tuple[float, float, float] = IMAGENET_STD
    weights_layout: Optional[str] = None
    weights_file: Optional[str] = None
    small_args: Mapping[str, Any] = field(default_factory=dict)


BACKBONES: Registry[Callable[..., "CascadeBackbone"]] = Registry("backbone")


def register_backbone(name: str, *, pixel_mean: Tuple[float, float, float] = IMAGENET_MEAN,
                      pixel_std: Tuple[float, float, float] = IMAGENET_STD, weights_layout: Optional[str] = None,
                      weights_file: Optional[str] = None, small_args: Optional[Mapping[str, Any]] = None
                      ) -> Callable[[Callable[..., "CascadeBackbone"]], Callable[..., "CascadeBackbone"]]:
    """Decorator: register a factory ``(**kwargs) -> CascadeBackbone`` under ``name``, with the
    settings of its pretrained weights (:class:`BackboneInfo`). A name registered twice is an
    error. The factory is returned unchanged."""
    if len(pixel_mean) != 3 or len(pixel_std) != 3 or min(pixel_std) <= 0:
        raise ValueError(f"backbone {name!r}: pixel_mean and pixel_std must be three numbers (std > 0)")
    if weights_layout is not None and weights_layout not in WEIGHT_LAYOUTS:
        raise ValueError(f"backbone {name!r}: weights_layout must be one of {WEIGHT_LAYOUTS} or None, "
                         f"got {weights_layout!r}")
    info = BackboneInfo(tuple(float(v) for v in pixel_mean), tuple(float(v) for v in pixel_std),
                        weights_layout, weights_file, dict(small_args or {}))
    return BACKBONES.register(name, info=info)


def list_backbones() -> List[str]:
    """The registered backbone names, sorted."""
    return BACKBONES.names()


def backbone_info(name: str) -> BackboneInfo:
    """What ``name`` was registered with; UnknownNameError (with close matches) if unknown."""
    return BACKBONES.info(name)["info"]


def build_backbone(name: str, **kwargs: Any) -> "CascadeBackbone":
    """Build a registered backbone; an unknown name raises UnknownNameError listing close matches."""
    return BACKBONES.get(name)(**kwargs)


class CascadeBackbone(nn.Module):
    """A backbone split into the three stages of a layer cascade.

    Stage 1 is dense and downsamples to output stride 8. Stages 2 and 3 keep that resolution
    (dilation, never stride), so they can run on the active pixels only: they take and return a
    feature container (:mod:`sparse_lc.ops`), dense or sparse.

    Subclasses set ``stage_channels`` (output channels of each stage) and ``stage_dilations``
    (dilation of each stage's 3x3 convs; the stage's head uses the same, sharing its rulebook).
    """

    output_stride: int = 8
    stage_channels: Tuple[int, int, int]
    stage_dilations: Tuple[int, int, int]

    def make_head(self, stage: int, head_channels: int, num_classes: int) -> nn.Module:
        """The pixel classifier after stage ``stage`` (1, 2, 3): a :class:`SegHead` at the stage's
        width and dilation. A backbone may override it (e.g. an ASPP head on stage 3)."""
        return SegHead(self.stage_channels[stage - 1], head_channels, num_classes,
                       dilation=self.stage_dilations[stage - 1])

    def load_pretrained(self, state_dict: Mapping[str, torch.Tensor]) -> List[str]:
        """Load ImageNet weights in the layout of the backbone's source library; return the keys
        of ``state_dict`` that were not used (e.g. the ImageNet classifier). Raises ValueError
        naming the mismatching keys."""
        raise ValueError(f"backbone {type(self).__name__} takes no pretrained weights")

    def stage_modules(self) -> Tuple[List[nn.Module], List[nn.Module], List[nn.Module]]:
        """The modules of each stage (to freeze a stage, or to attribute work to it)."""
        raise NotImplementedError

    def stage1(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W] -> [B, C1, H/8, W/8]`` (H, W multiples of 8)."""
        raise NotImplementedError

    def stage2(self, x: Features) -> Features:
        """``[B, C1, h, w] -> [B, C2, h, w]`` on the active pixels of ``x``."""
        raise NotImplementedError

    def stage3(self, x: Features) -> Features:
        """``[B, C2, h, w] -> [B, C3, h, w]`` on the active pixels of ``x``."""
        raise NotImplementedError


def load_matching(backbone: nn.Module, state_dict: Mapping[str, torch.Tensor], unused: Callable[[str], bool],
                  source: str) -> List[str]:
    """Load ``state_dict`` into ``backbone`` by name, leaving out the keys for which ``unused(key)``
    is True (returned, in order). A ``module.`` prefix (DataParallel checkpoints) is removed.
    Raises ValueError (``"not a matching {source} state_dict (...)"``) naming missing, unexpected
    and wrongly shaped keys."""
    kept: Dict[str, torch.Tensor] = {}
    dropped = []
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if unused(key):
            dropped.append(key)
        else:
            kept[key] = value
    mismatch = state_dict_mismatch(backbone.state_dict(), kept)
    if mismatch:
        raise ValueError(f"not a matching {source} state_dict ({mismatch})")
    backbone.load_state_dict(kept)
    return dropped
