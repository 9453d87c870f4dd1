"""What a cascade backbone is (one network split into three stages at output stride 8), and
how backbones are registered and built by name (timm's habit)::

    @register_backbone("resnet18", weights_layout="torchvision", weights_file="resnet18-f37072fd.pth")
    def resnet18(dilations=(2, 4)) -> CascadeBackbone: ...

    build_backbone("resnet18", dilations=(2, 4))
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from ..checkpoint import state_dict_mismatch
from ..errors import ModelError
from ..layers import SegHead
from ..ops import Features, Step, check_steps
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
    error. The factory is returned unchanged.

    With ``small_args``, the small instance is built (on the CPU: keep it small) and its stages
    2-3 are checked at once (:func:`check_backbone`): a backbone the sparse path cannot run
    exactly is refused here, with a ModelError naming the stage and module, before any config
    uses it. (The library's own backbones are not built when sparse_lc is imported: its tests
    check every one of them.)"""
    if len(pixel_mean) != 3 or len(pixel_std) != 3 or min(pixel_std) <= 0:
        raise ValueError(f"backbone {name!r}: pixel_mean and pixel_std must be three numbers (std > 0)")
    if weights_layout is not None and weights_layout not in WEIGHT_LAYOUTS:
        raise ValueError(f"backbone {name!r}: weights_layout must be one of {WEIGHT_LAYOUTS} or None, "
                         f"got {weights_layout!r}")
    info = BackboneInfo(tuple(float(v) for v in pixel_mean), tuple(float(v) for v in pixel_std),
                        weights_layout, weights_file, dict(small_args or {}))

    def register(factory: Callable[..., "CascadeBackbone"]) -> Callable[..., "CascadeBackbone"]:
        if small_args and not factory.__module__.startswith(__package__ + "."):
            _check_factory(name, factory, info.small_args)
        return BACKBONES.register(name, info=info)(factory)
    return register


def _check_factory(name: str, factory: Callable[..., "CascadeBackbone"], args: Mapping[str, Any]) -> None:
    """Build ``factory(**args)`` and check its later stages; ModelError naming the backbone."""
    where = f"register_backbone({name!r}), small_args {dict(args)}"
    try:
        backbone = factory(**args)
    except Exception as e:  # noqa: BLE001  (user code: any error building it is reported with its name)
        raise ModelError(f"{where}: building it failed: {type(e).__name__}: {' '.join(str(e).split())}") from None
    try:
        check_backbone(backbone)
    except ModelError as e:
        raise ModelError(f"{where}: {e}") from None


def check_backbone(backbone: "CascadeBackbone", heads: Optional[Sequence[nn.Module]] = None,
                   num_classes: Optional[int] = None) -> None:
    """Run stages 2 and 3 of ``backbone``, each followed by its head (``heads[1]``, ``heads[2]``;
    default: :meth:`CascadeBackbone.make_head`'s), once on stand-in features
    (:mod:`sparse_lc.ops.probe`): ModelError in one line for anything the sparse path cannot run
    exactly, naming the stage, the module (``backbone.layer3.0.conv2``, ``heads.1.conv``) and
    why. Nothing is computed: milliseconds for any model, on any device."""
    channels = getattr(backbone, "stage_channels", None)
    if not isinstance(backbone, CascadeBackbone) or channels is None or len(channels) != 3:
        raise ModelError(f"{type(backbone).__name__} is not a CascadeBackbone with stage_channels (C1, C2, C3): "
                         f"see docs/extending.md")
    root = nn.Module()
    root.backbone = backbone
    root.heads = nn.ModuleList(heads if heads is not None else (backbone.make_head(s, 8, 2) for s in (1, 2, 3)))
    classes = num_classes if heads is not None else 2
    c1, c2, c3 = (int(c) for c in channels)
    check_steps(root, [Step("stage 2", "backbone.stage2", backbone.stage2, c1, c2),
                       Step("stage 2", "heads.1", root.heads[1], c2, classes),
                       Step("stage 3", "backbone.stage3", backbone.stage3, c2, c3),
                       Step("stage 3", "heads.2", root.heads[2], c3, classes)])


def list_backbones() -> List[str]:
    """The registered backbone names, sorted."""
    return BACKBONES.names()


def backbone_info(name: str) -> BackboneInfo:
    """What ``name`` was registered with; UnknownNameError (with close matches) if unknown."""
    return BACKBONES.info(name)["info"]


def backbone_args_problem(name: str, args: Mapping[str, Any]) -> Optional[Tuple[str, str]]:
    """None if the factory of ``name`` takes ``args`` (keyword arguments), else ``(the argument at
    fault, what is wrong in one line)``: ``backbone 'tiny' takes no argument 'width' (its
    arguments: widths, dilations, depths)``."""
    parameters = inspect.signature(BACKBONES.get(name)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    takes = [n for n, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in args:
        if key not in takes:
            return key, f"backbone {name!r} takes no argument {key!r} (its arguments: {', '.join(takes) or 'none'})"
    for key in takes:
        if parameters[key].default is inspect.Parameter.empty and key not in args:
            return key, f"backbone {name!r} needs the argument {key!r}"
    return None


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
