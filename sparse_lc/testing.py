"""The contract every backbone keeps: one set of weights, two execution paths, the same numbers.

:func:`assert_sparse_matches_dense` runs a :class:`~sparse_lc.LayerCascade` both ways, the
sparse path (spconv submanifold convolutions on the hard pixels) and the dense reference (plain
torch convolutions on full maps, zeroed outside the active pixels), and checks that they agree:

* outputs, in eval mode: hard masks, active masks and stage maps equal; each stage's logits and
  the final logits equal to a tolerance relative to their scale; labels equal wherever the top
  two classes differ by more than that. At rho = 0 (no hard pixel), rho = 1 (every pixel hard), at thresholds taken
  from the model's own confidences, and with forced hard masks of given shares (a mixed split
  whatever the weights, one image of the batch with no hard pixel at all);
* gradients, in train mode with forced hard masks: every parameter's gradient, the input's, and
  the batch-norm statistics after the step;
* each with ``halo`` 0 and 1 (context pixels around the hard ones);
* in float64 on the CPU by default, where only rounding separates the paths. On CUDA the
  checks run with TF32 off (spconv never uses it; cuDNN would). In float16 (half-precision
  mode) the thresholded settings and gradients are left out by default: a pixel whose
  confidence lies within half-precision rounding of rho may go either way, and nobody trains
  in float16 weights. Forced hard masks make both paths compute the same pixels; logits are
  compared at half precision's tolerance, labels where the top two classes are further apart
  than that;
* with the checks that cost a host sync (:func:`sparse_lc.ops.debug_checks`) turned on.

A backbone of your own is checked in a few lines (see docs/extending.md)::

    from sparse_lc import LayerCascade, build_backbone
    from sparse_lc.testing import assert_sparse_matches_dense, randomize_weights

    model = LayerCascade(build_backbone("my_net"), num_classes=5, head_channels=16)
    assert_sparse_matches_dense(randomize_weights(model, seed=0))

The model passed in is never changed (each check runs on a copy).
"""
from __future__ import annotations

import copy
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .analysis import nested_masks
from .assembly import grid_size
from .cascade import LayerCascade
from .ops import set_debug_checks
from .rho import Rho, format_rho
from .utils.precision import tf32_disabled

__all__ = ["ContractCheck", "assert_sparse_matches_dense", "random_images", "randomize_weights", "sparse_dense_gap"]


@dataclass
class ContractCheck:
    """One comparison the contract made, and how far apart the two paths were."""

    setting: str          # e.g. "halo 1, rho 0.93/0.87" or "halo 0, gradients, hard shares 0.5/0.25"
    max_difference: float  # largest |sparse - dense| of what was compared, relative to its scale
    hard_share: float      # share of pixels stage 1 left hard


def randomize_weights(model: nn.Module, seed: int = 0, logit_scale: float = 30.0) -> nn.Module:
    """Random weights everywhere (in place; returns ``model``), random batch-norm running
    statistics (so that eval-mode batch norm is not the identity), and classifiers
    (``*classifier.weight``) scaled so that top softmax scores spread over (1/K, 1): thresholds
    between 0.5 and 0.99 then split the pixels into easy and hard ones."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (p[0].numel() ** -0.5 if p.dim() > 1 else 0.1))
            if name.endswith("classifier.weight"):
                p.mul_(logit_scale)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.add_(1.0)
    return model


def random_images(batch: int = 3, height: int = 48, width: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth random images (noise blurred a little, plus fine noise): normalised floats
    ``[B, 3, H, W]`` with structure at several scales, as convolutions see in photos."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch, 3, height // 4 + 1, width // 4 + 1, generator=gen)
    smooth = torch.nn.functional.interpolate(noise, size=(height, width), mode="bilinear", align_corners=False)
    return smooth + 0.3 * torch.randn(batch, 3, height, width, generator=gen)


#: default tolerance per dtype, relative to the largest value of the compared tensor: float64 leaves
#: only rounding (1e-15 relative seen on every built-in backbone); float32 sums over thousands of
#: pixels in another order (up to ~4e-5 relative seen); float16 rounds every op's output to 11 bits
TOLERANCES = {torch.float64: 1e-9, torch.float32: 1e-4, torch.float16: 2e-2}
HALF = (torch.float16, torch.bfloat16)


def assert_sparse_matches_dense(model: LayerCascade, images: Optional[torch.Tensor] = None,
                                rhos: Optional[Sequence[Rho]] = None, halos: Sequence[int] = (0, 1),
                                hard_shares: Sequence[Tuple[float, float]] = ((0.5, 0.25),),
                                gradients: Optional[bool] = None, dtype: Optional[torch.dtype] = torch.float64,
                                device: Optional[str] = "cpu", rtol: Optional[float] = None,
                                seed: int = 0) -> List[ContractCheck]:
    """Check that the sparse and the dense path of ``model`` agree (see the module docstring);
    raise AssertionError naming the setting and what differs. Returns every check made.

    Args:
        model:       the cascade to check (not changed: the checks run on a copy).
        images:      normalised float ``[B, 3, H, W]`` with B >= 2 (default: :func:`random_images`,
                     2 x 3 x 64 x 96).
        rhos:        thresholds to check in eval mode (default: 0, 1, and three taken from the
                     model's confidences so that they split the pixels; none in half precision).
        halos:       the halos to check with.
        hard_shares: forced nested hard masks (share after stage 1, after stage 2); their
                     clustered masks leave the first image without any hard pixel.
        gradients:   also compare gradients and batch-norm statistics in train mode (default:
                     yes, but in half precision).
        dtype, device: where the copy runs (None: as ``model``). The default, float64 on the CPU,
                     leaves rounding alone to tell the paths apart: in float32 a deep network
                     with random weights and train-mode batch norm over a few dozen active
                     pixels can amplify rounding far beyond any fixed tolerance.
        rtol:        tolerance of logits and gradients, relative to the largest absolute value
                     (at least 1 for logits) of the tensor compared (default:
                     :data:`TOLERANCES` of the dtype).
    """
    model = copy.deepcopy(model).to(device=device, dtype=dtype)
    param = next(model.parameters())
    half = param.dtype in HALF
    rtol = TOLERANCES.get(param.dtype, 1e-2) if rtol is None else rtol
    gradients = not half if gradients is None else gradients
    if images is None:
        images = random_images(batch=2, height=64, width=96, seed=seed)
    images = images.to(param.device, param.dtype)
    if images.dim() != 4 or images.shape[0] < 2:
        raise ValueError(f"images must be a batch [B, 3, H, W] with B >= 2, got {list(images.shape)}")
    checks: List[ContractCheck] = []
    with _contract_settings(param.device):
        for halo in halos:
            model.halo = halo
            masks = [_forced_masks(model, images, shares, seed) for shares in hard_shares]
            for rho in (([] if half else _splitting_rhos(model, images)) if rhos is None else rhos):
                checks.append(_compare_outputs(model, images, f"halo {halo}, rho {format_rho(rho)}", rtol, rho=rho))
            for shares, hard in zip(hard_shares, masks):
                setting = f"halo {halo}, hard shares {shares[0]:g}/{shares[1]:g}"
                checks.append(_compare_outputs(model, images, setting, rtol, hard_masks=hard))
                if gradients:
                    checks.append(_compare_gradients(model, images, hard, f"{setting}, gradients", rtol))
    return checks


@contextmanager
def _contract_settings(device: torch.device) -> Iterator[None]:
    """The contract's scope: the debug checks on; on CUDA, TF32 off (torch's settings are put
    back afterwards)."""
    previous = set_debug_checks(True)
    try:
        with tf32_disabled() if device.type == "cuda" else nullcontext():
            yield
    finally:
        set_debug_checks(previous)


def sparse_dense_gap(model: LayerCascade, images: torch.Tensor, **forward_kwargs) -> Tuple[float, bool]:
    """Run ``images`` ``[B, 3, H, W]`` on both paths (no gradients, ``forward_kwargs`` such as
    ``rho`` for both): the largest absolute difference of their final logits, and whether their
    stage maps are equal. A quick check (``sparse-lc demo``, ``doctor``); the contract is
    :func:`assert_sparse_matches_dense`."""
    with torch.no_grad():
        sparse, dense = (model(images, execution=e, **forward_kwargs) for e in ("sparse", "dense"))
    return float((sparse.logits - dense.logits).abs().max()), torch.equal(sparse.stage_map, dense.stage_map)


def _splitting_rhos(model: LayerCascade, images: torch.Tensor) -> List[Rho]:
    """0 (no hard pixel), 1 (all hard), and thresholds at quantiles of the model's own stage-1
    and stage-2 confidences, so that they split the pixels whatever the weights."""
    with torch.no_grad():
        result = model.eval()(images, rho=1.0, execution="dense")  # every stage on every pixel
    conf1, conf2 = (model.confidence(result.stage_logits[k], k + 1) for k in (0, 1))
    low, high = _between(conf1, 0.3), _between(conf1, 0.7)
    return [0.0, 1.0, low, (high, _between(conf2, 0.5)), (high, _between(conf2, 0.8))]


def _between(confidence: torch.Tensor, quantile: float) -> float:
    """A threshold halfway between two neighbouring distinct values of ``confidence``, near its
    ``quantile``: no pixel lies within float noise of it, so both paths split alike."""
    values = confidence.flatten().double().unique()  # sorted
    if len(values) == 1:
        return float(values[0])
    i = min(int(quantile * (len(values) - 1)), len(values) - 2)
    return float((values[i] + values[i + 1]) / 2)


def _forced_masks(model: LayerCascade, images: torch.Tensor, shares: Tuple[float, float],
                  seed: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Clustered nested hard masks with ``shares``; the first image gets none."""
    grid = (images.shape[0], *grid_size(*images.shape[2:]))
    hard1, hard2 = nested_masks(grid, shares, "clustered", seed)
    hard1[0], hard2[0] = False, False
    return hard1.to(images.device), hard2.to(images.device)


def _compare_outputs(model: LayerCascade, images: torch.Tensor, setting: str, rtol: float,
                     **forward_kwargs) -> ContractCheck:
    with torch.no_grad():
        model.eval()
        sparse = model(images, execution="sparse", **forward_kwargs)
        dense = model(images, execution="dense", **forward_kwargs)
    for name, a, b in (("hard masks", sparse.hard_masks, dense.hard_masks),
                       ("active masks", sparse.active_masks, dense.active_masks),
                       ("stage map", (sparse.stage_map,), (dense.stage_map,))):
        if not all(torch.equal(x, y) for x, y in zip(a, b)):
            raise AssertionError(f"{setting}: the {name} of the sparse and the dense run differ")
    dense_logits = dense.logits  # computed on each access: once here
    pairs = [*zip(sparse.stage_logits, dense.stage_logits), (sparse.logits, dense_logits)]
    errors = [_relative_error(a, b, f"{setting}: {where}", rtol, floor=1.0)
              for (a, b), where in zip(pairs, ("stage 1 logits", "stage 2 logits", "stage 3 logits", "final logits"))]
    tolerance = rtol * max(1.0, float(dense_logits.abs().max()))
    _check_labels(sparse.labels, dense.labels, dense_logits, setting, tolerance)
    return ContractCheck(setting, max(errors), float(sparse.hard_masks[0].double().mean()))


def _check_labels(sparse_labels: torch.Tensor, dense_labels: torch.Tensor, dense_logits: torch.Tensor, setting: str,
                  tolerance: float) -> None:
    """Labels must agree wherever the dense run's top two logits are further apart than the
    logits may differ (elsewhere the argmax of equal numbers is a coin toss)."""
    top2 = dense_logits.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 * tolerance
    differ = (sparse_labels != dense_labels) & clear
    if differ.any():
        raise AssertionError(f"{setting}: labels differ at {int(differ.sum())} pixels with a clear margin")


def _compare_gradients(model: LayerCascade, images: torch.Tensor, hard_masks: Tuple[torch.Tensor, torch.Tensor],
                       setting: str, rtol: float) -> ContractCheck:
    """Train mode, the same hard masks for both paths: parameter and input gradients and the
    batch-norm statistics after the forward pass agree."""
    runs = {}
    weights = torch.randn(3, model.num_classes, generator=torch.Generator().manual_seed(1))
    for execution in ("sparse", "dense"):
        net = copy.deepcopy(model).train()
        x = images.clone().requires_grad_(True)
        result = net(x, execution=execution, hard_masks=hard_masks)
        w = weights.to(x.device, x.dtype)
        loss = sum((logits * w[k].view(1, -1, 1, 1)).sum() for k, logits in enumerate(result.stage_logits))
        (loss + (result.logits ** 2).mean()).backward()
        runs[execution] = ({n: p.grad for n, p in net.named_parameters() if p.grad is not None}, x.grad,
                           dict(net.named_buffers()), net)
    (grads_s, input_s, buffers_s, net), (grads_d, input_d, buffers_d, _) = runs["sparse"], runs["dense"]
    if set(grads_s) != set(grads_d):
        raise AssertionError(f"{setting}: different parameters got gradients: "
                             f"{sorted(set(grads_s) ^ set(grads_d))[:5]}")
    later = {id(p) for stage in (2, 3) for m in net.stage_modules(stage) for p in m.parameters()}
    missing = [n for n, p in net.named_parameters() if id(p) in later and n not in grads_s]
    if hard_masks[1].any() and missing:
        raise AssertionError(f"{setting}: stage 2-3 parameters without a gradient: {missing[:5]}")
    # a gradient that vanishes in exact arithmetic (e.g. a bias before a train-mode batch norm)
    # is float noise in both paths: held to a scale of 1e-3 of the largest gradient
    floor = 1e-3 * max(float(g.abs().max()) for g in grads_d.values())
    worst = 0.0
    for name in grads_s:
        worst = max(worst, _relative_error(grads_s[name], grads_d[name], f"{setting}: gradient of {name}", rtol, floor))
    worst = max(worst, _relative_error(input_s, input_d, f"{setting}: input gradient", rtol, 0.0))
    for name, buffer in buffers_s.items():
        tolerance = 1e-5 * (1 + float(buffer.abs().max()))
        if buffer.is_floating_point() and _max_difference(buffer, buffers_d[name]) > tolerance:
            raise AssertionError(f"{setting}: batch-norm buffer {name} differs after the step")
        if not buffer.is_floating_point() and not torch.equal(buffer, buffers_d[name]):
            raise AssertionError(f"{setting}: buffer {name} differs after the step")
    return ContractCheck(setting, worst, float(hard_masks[0].double().mean()))


def _relative_error(actual: torch.Tensor, expected: torch.Tensor, what: str, rtol: float, floor: float) -> float:
    scale = max(float(expected.abs().max()), floor)
    error = _max_difference(actual, expected)
    if error > rtol * scale + 1e-8:
        raise AssertionError(f"{what} differs by {error:.3g} (scale {scale:.3g}, tolerance {rtol:g} x scale)")
    return error / scale if scale > 0 else error


def _max_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0

