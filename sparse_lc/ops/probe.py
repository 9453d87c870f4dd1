"""The check of stages 2-3 when a model is built: each stage runs once on stand-in features.

:class:`ProbeFeatures` has the feature-container interface (:class:`~sparse_lc.ops.Features`)
but no values: it holds a channel count and which stage input it came from, and each operation
checks its module with the rules the containers themselves apply (:mod:`sparse_lc.ops.features`):
a stride-2 conv, a pooling module, a norm that mixes pixels, an activation that is not
elementwise, a torch module called on the features as if they were a tensor, an attribute the
sparse rows do not have (``x.data``), a mismatch of channels. Nothing is computed, so the check
takes milliseconds for any model, on any device (the meta device too), and it cannot pass by
accident: it walks the code the stages run, branch by branch, not the modules they hold.

:func:`check_steps` runs a model's steps (a stage, then its head) in train and in eval mode,
with a hook on every module, so that a refusal names the innermost module being run:
``stage 2: backbone.layer3.0.conv2 (Conv2d) cannot run on the active pixels: ...``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from ..errors import ModelError
from .features import (
    check_activation,
    check_linear,
    check_max_pool,
    check_submanifold_conv,
    norm_kind,
    scale_vector,
)

__all__ = ["DOCS", "ProbeFeatures", "Refusal", "Step", "check_steps"]

#: Where the table of what stages 2-3 may hold lives (named by every refusal).
DOCS = "docs/extending.md#what-stages-2-and-3-may-contain"


class Refusal(Exception):
    """An operation the sparse path cannot run exactly; ``module``: the module it was given."""

    def __init__(self, why: str, module: Optional[nn.Module] = None):
        super().__init__(why)
        self.module = module


def _rule(check: Callable[[], object], module: Optional[nn.Module]):
    """Run one of the containers' checks; its ValueError becomes a :class:`Refusal` of ``module``."""
    try:
        return check()
    except ValueError as e:
        raise Refusal(str(e), module) from None


class ProbeFeatures:
    """Stand-in features of a stage: ``num_channels`` channels on the active set of ``origin``
    (the stage's input), per pixel, or per image (``image_level``: :meth:`global_pool`'s)."""

    __slots__ = ("num_channels", "origin", "image_level")

    def __init__(self, num_channels: int, origin: object, image_level: bool = False):
        self.num_channels = int(num_channels)
        self.origin = origin
        self.image_level = image_level

    def _like(self, channels: Optional[int] = None, image_level: Optional[bool] = None) -> "ProbeFeatures":
        return ProbeFeatures(self.num_channels if channels is None else channels, self.origin,
                             self.image_level if image_level is None else image_level)

    def __getattr__(self, name: str):
        raise Refusal(f"it uses x.{name}, which is not an operation of the feature container (the sparse path has "
                      f"one row per active pixel, no tensor of the map)")

    # ------------------------------------------------------------------------------ ops
    def conv(self, conv: nn.Conv2d) -> "ProbeFeatures":
        if not isinstance(conv, nn.Conv2d):
            raise Refusal(f"x.conv takes an nn.Conv2d, got {type(conv).__name__}", conv)
        if self.image_level:
            if conv.kernel_size != (1, 1):
                raise Refusal("on image-level features (one value per image, x.global_pool()) a conv must be 1x1",
                              conv)
        else:
            _rule(lambda: check_submanifold_conv(conv), conv)
        if conv.in_channels != self.num_channels:
            raise Refusal(f"it takes {conv.in_channels} channels, its input has {self.num_channels}", conv)
        return self._like(conv.out_channels)

    def conv_norm_relu(self, conv: nn.Conv2d, norm: nn.Module) -> "ProbeFeatures":
        return self.conv(conv).norm(norm).relu()

    def norm(self, norm: nn.Module) -> "ProbeFeatures":
        kind = _rule(lambda: norm_kind(norm, self.num_channels), norm)
        if self.image_level and kind not in ("identity", "layer"):
            raise Refusal("on image-level features (x.global_pool()) only a layer norm is exact: batch or group "
                          "statistics would change with the images of the batch", norm)
        return self._like()

    def relu(self) -> "ProbeFeatures":
        return self._like()

    def linear(self, linear: nn.Linear) -> "ProbeFeatures":
        _rule(lambda: check_linear(linear, self.num_channels), linear)
        return self._like(linear.out_features)

    def act(self, activation: nn.Module) -> "ProbeFeatures":
        _rule(lambda: check_activation(activation, self.num_channels), activation)
        return self._like()

    def scale(self, weight: torch.Tensor) -> "ProbeFeatures":
        _rule(lambda: scale_vector(weight, self.num_channels), None)
        return self._like()

    def add(self, other: "ProbeFeatures", alpha: float = 1.0) -> "ProbeFeatures":
        self._same("add", other, image_level_ok=False)
        if other.num_channels != self.num_channels:
            raise Refusal(f"add: {self.num_channels} channels and {other.num_channels}")
        return self._like()

    def mul(self, other: "ProbeFeatures") -> "ProbeFeatures":
        self._same("mul", other, image_level_ok=True)
        if other.num_channels != self.num_channels:
            raise Refusal(f"mul: {self.num_channels} channels and {other.num_channels}")
        return self._like()

    def cat(self, others: Sequence["ProbeFeatures"]) -> "ProbeFeatures":
        for other in others:
            self._same("cat", other, image_level_ok=False)
        return self._like(self.num_channels + sum(o.num_channels for o in others))

    def max_pool(self, kernel_size: int, dilation: int = 1) -> "ProbeFeatures":
        self._pixels("x.max_pool")
        _rule(lambda: check_max_pool(kernel_size, dilation), None)
        return self._like()

    def global_pool(self) -> "ProbeFeatures":
        self._pixels("x.global_pool")
        return self._like(image_level=True)

    def pool(self, pool: nn.Module) -> "ProbeFeatures":
        raise Refusal("a pooling module reads pixels outside the active set (and may stride): use "
                      "x.max_pool(k, dilation) (stride 1, over the active pixels of the window) or x.global_pool() "
                      "(each image's mean over its active pixels)", pool)

    def restrict(self, mask: torch.Tensor, prefix: str) -> "ProbeFeatures":
        raise Refusal("x.restrict belongs to the cascade, not to a stage")

    def to_dense(self) -> torch.Tensor:
        raise Refusal("x.to_dense() inside a later stage turns the active pixels into a full map: what follows "
                      "would not run on the active pixels only")

    # -------------------------------------------------------------------------- checks
    def _pixels(self, op: str) -> None:
        if self.image_level:
            raise Refusal(f"{op} on image-level features (x.global_pool()): they have no pixels")

    def _same(self, op: str, other: object, image_level_ok: bool) -> None:
        if not isinstance(other, ProbeFeatures) or other.origin is not self.origin:
            raise Refusal(f"{op}: the other operand is not features derived from this stage's input "
                          f"(got {type(other).__name__})")
        if other.image_level and not (image_level_ok or self.image_level):
            raise Refusal(f"{op} of image-level features (x.global_pool()) with features per pixel: use x.mul")
        if self.image_level and not other.image_level:
            raise Refusal(f"{op}: image-level features first, features per pixel second: write pixels.{op}(image)")


@dataclass
class Step:
    """One piece of a model's later stages, run on stand-in features: ``run`` (e.g.
    ``backbone.stage2``, or a stage's head) takes ``in_channels`` and must return features per
    pixel of ``out_channels`` (None: any). ``stage`` names it in refusals ("stage 2"); ``owner``
    is the path given to code outside any submodule ("backbone.stage2")."""

    stage: str
    owner: str
    run: Callable[[ProbeFeatures], object]
    in_channels: int
    out_channels: Optional[int] = None


def check_steps(root: nn.Module, steps: Sequence[Step], prefix: str = "") -> None:
    """Run ``steps`` on stand-in features in train and in eval mode (``root``'s modes are put back
    afterwards); ModelError in one line for the first thing the sparse path cannot run exactly,
    naming the stage, the module's path in ``root`` (``prefix`` before it) and why."""
    names = {id(m): f"{prefix}{name}" for name, m in root.named_modules() if name}
    modes = [(m, m.training) for m in root.modules()]
    stack: List[nn.Module] = []
    hooks = [m.register_forward_pre_hook(_pre_hook(stack)) for m in root.modules()]
    hooks += [m.register_forward_hook(_post_hook(stack)) for m in root.modules()]
    try:
        for training in (True, False):
            for m, _ in modes:
                m.training = training
            for step in steps:
                stack.clear()
                _run_step(step, stack, names)
    finally:
        for hook in hooks:
            hook.remove()
        for m, training in modes:
            m.training = training


def _pre_hook(stack: List[nn.Module]):
    def hook(module: nn.Module, args) -> None:
        if _is_torch_layer(module) and any(isinstance(a, ProbeFeatures) for a in args):
            raise Refusal(f"{type(module).__name__} is called on the features as on a tensor: call the operation "
                          f"of the container instead (x.conv(m), x.norm(m), x.linear(m), x.act(m); "
                          f"sparse_lc.ops.run_sequential(x, seq) for an nn.Sequential of them)", module)
        stack.append(module)
    return hook


def _post_hook(stack: List[nn.Module]):
    def hook(module: nn.Module, args, out) -> None:  # returns None: the output stays as it is
        stack.pop()
    return hook


def _is_torch_layer(module: nn.Module) -> bool:
    """A layer of torch.nn that takes tensors (its containers, and the identity, pass the
    features on unchanged)."""
    return type(module).__module__.startswith("torch.nn.") and not isinstance(
        module, (nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.Identity))


def _run_step(step: Step, stack: List[nn.Module], names: Dict[int, str]) -> None:
    origin = object()
    try:
        out = step.run(ProbeFeatures(step.in_channels, origin))
        if not isinstance(out, ProbeFeatures) or out.origin is not origin or out.image_level:
            raise Refusal(f"returns {type(out).__name__}, not features per pixel derived from its input")
        if step.out_channels is not None and out.num_channels != step.out_channels:
            raise Refusal(f"returns {out.num_channels} channels where {step.out_channels} are expected (the "
                          f"backbone's stage_channels, or the number of classes for a head)")
    except Refusal as e:
        raise ModelError(_message(step, e.module or (stack[-1] if stack else None), str(e), names)) from None
    except Exception as e:  # noqa: BLE001  (user code: whatever it raises is reported with its place)
        text = " ".join(str(e).replace("ProbeFeatures", "feature container").split())
        why = f"{type(e).__name__}: {text}"
        if isinstance(e, TypeError) and "feature container" in text:
            why += " (a block in stages 2-3 calls the container's operations: x.conv, x.norm, x.act, ...)"
        raise ModelError(_message(step, stack[-1] if stack else None, why, names)) from None


def _message(step: Step, module: Optional[nn.Module], why: str, names: Dict[int, str]) -> str:
    if module is None:
        where = step.owner
    else:
        where = names.get(id(module), f"a {type(module).__name__} that is not a submodule of the model, in "
                                      f"{step.owner}")
        where = f"{where} ({type(module).__name__})"
    return f"{step.stage}: {where} cannot run on the active pixels: {why} (what stages 2-3 may hold: {DOCS})"
