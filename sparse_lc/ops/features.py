"""The feature-container interface that lets one block definition run on two representations.

A block (see :mod:`sparse_lc.layers`) never touches a tensor directly. It calls
``x.conv(module)``, ``x.norm(module)``, ``x.relu()`` (or the three at once,
``x.conv_norm_relu(conv, norm)``), ``x.linear(module)``, ``x.act(module)``, ``x.scale(weight)``,
``x.add(other, alpha)``, ``x.mul(other)``, ``x.cat(others)``, ``x.max_pool(k, dilation)`` and
``x.global_pool()`` on a container, and the container decides how to run that step:

* :class:`~sparse_lc.ops.dense.DenseFeatures` holds a ``[B, C, H, W]`` map and, optionally, an
  active mask. Without a mask it is an ordinary dense network (stage 1). With a mask it is the
  *dense reference* of a submanifold network: every output is zeroed outside the active set.
* :class:`~sparse_lc.ops.sparse.SparseFeatures` holds one ``[N, C]`` feature row per active
  pixel (on an :class:`~sparse_lc.ops.active_set.ActiveSet`) and runs spconv's submanifold
  convolution on them.

Both share the canonical weights of ordinary ``nn.Conv2d`` / ``nn.BatchNorm2d`` / ``nn.LayerNorm`` /
``nn.Linear`` modules (torch layout ``[out, in, kh, kw]``), so torchvision and timm state_dicts
load straight into the model.

Statistics over space (GroupNorm, InstanceNorm, :meth:`Features.global_pool`) have one meaning
on every path: each image's statistics over *its active pixels*. With every pixel active that is
the ordinary op (the plain dense path calls it), so a network trained at rho = 1 (warm-up) and
run as a cascade normalises the same way. What a later stage may hold is checked when a model is
built (:mod:`sparse_lc.ops.probe`); the rules live here, shared by the three containers.
"""
from __future__ import annotations

from typing import Optional, Protocol, Sequence, Tuple, Type, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn


@runtime_checkable
class Features(Protocol):
    """What every feature container offers to the blocks."""

    def conv(self, conv: nn.Conv2d) -> "Features":
        """An ``nn.Conv2d`` ``[B, C_in, H, W] -> [B, C_out, H, W]``; on an active set stride 1 and
        'same' zero padding (:func:`check_submanifold_conv`), any groups (depthwise included)."""

    def norm(self, norm: nn.Module) -> "Features":
        """Batch norm (train-mode statistics over the active pixels), layer norm over the channels
        (``nn.LayerNorm(C)``, ``LayerNorm2d``), group / instance norm (statistics over each image's
        active pixels) or ``nn.Identity`` (a batch norm folded into its conv): :func:`norm_kind`."""

    def relu(self) -> "Features": ...

    def linear(self, linear: nn.Linear) -> "Features":
        """An ``nn.Linear`` over the channels, ``[B, C_in, H, W] -> [B, C_out, H, W]`` (a 1x1
        conv in channels-last form, as ConvNeXt's MLP writes it)."""

    def act(self, activation: nn.Module) -> "Features":
        """An elementwise activation module (GELU, SiLU, ReLU6, Hardswish, Sigmoid, ...:
        :func:`is_activation`); zero outside the active set as every op."""

    def scale(self, weight: torch.Tensor) -> "Features":
        """Multiply channel c by ``weight[c]`` (a tensor of C values in any shape, e.g. a layer scale)."""

    def mul(self, other: "Features") -> "Features":
        """``self * other``, elementwise: ``other`` on the same active set, or image-level
        features ``[B, C, 1, 1]`` (:meth:`global_pool`), one row of values per image (a
        squeeze-excitation gate)."""

    def global_pool(self) -> "Features":
        """Image-level features ``[B, C, H, W] -> [B, C, 1, 1]``: each image's mean over its active
        pixels (0 for an image without any), as a plain dense container. Ops on them are cheap
        (one value per image); :meth:`mul` brings them back to the pixels. No MACs counted."""

    def conv_norm_relu(self, conv: nn.Conv2d, norm: nn.Module) -> "Features":
        """``self.conv(conv).norm(norm).relu()``, which a container may run as one step (the
        sparse path on CUDA: one spconv kernel when batch norm is folded into the conv)."""

    def add(self, other: "Features", alpha: float = 1.0) -> "Features":
        """``self + alpha * other`` (as ``torch.add``), both on the same active set."""

    def cat(self, others: Sequence["Features"]) -> "Features":
        """Channel concatenation ``[B, C0, H, W] + [B, Ci, H, W]... -> [B, C0 + sum Ci, H, W]``
        of containers on the same active set (the branches of an Inception block)."""

    def max_pool(self, kernel_size: int, dilation: int = 1) -> "Features":
        """Submanifold max pool ``[B, C, H, W] -> [B, C, H, W]``: stride 1, a ``kernel_size``
        (odd) window dilated by ``dilation``, the maximum over the *active* pixels of the window
        only (the centre always is one). Ties go to the first active pixel in raster order, as in
        ``F.max_pool2d``, so gradients agree too. Pools do no multiply-accumulates: none counted."""

    def restrict(self, mask: torch.Tensor, prefix: str) -> "Features": ...

    def to_dense(self) -> torch.Tensor: ...


def run_sequential(x: Features, modules: nn.Sequential) -> Features:
    """Run an ``nn.Sequential`` of convs, norms, linears and activations (nested allowed) on a
    container, each by its operation (``x.conv``, ``x.norm``, ``x.linear``, ``x.act``)."""
    for module in modules:
        if isinstance(module, nn.Sequential):
            x = run_sequential(x, module)
        elif isinstance(module, nn.Conv2d):
            x = x.conv(module)
        elif isinstance(module, nn.Linear):
            x = x.linear(module)
        elif isinstance(module, nn.ReLU):
            x = x.relu()
        elif is_activation(module):
            x = x.act(module)
        else:
            x = x.norm(module)  # a norm, or a ValueError that says what the module is
    return x


def batch_norm_rows(bn: nn.modules.batchnorm._BatchNorm, rows: torch.Tensor) -> torch.Tensor:
    """Batch norm over feature rows ``[N, C] -> [N, C]``; train-mode statistics come from the N rows.

    The module itself is called (on an ``[N, C, 1, 1]`` view), so its momentum, running-stat and
    ``num_batches_tracked`` logic are exactly torch's. With fewer than two rows a batch has no
    variance: the running statistics are used instead, unchanged.
    """
    if uses_batch_statistics(bn) and rows.shape[0] < 2:
        if bn.running_mean is None:
            raise ValueError("batch norm without running statistics needs at least 2 active pixels")
        return F.batch_norm(rows, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                            training=False, eps=bn.eps)
    return bn(rows[:, :, None, None])[:, :, 0, 0]


def uses_batch_statistics(bn: nn.modules.batchnorm._BatchNorm) -> bool:
    """True when ``bn`` normalises with the statistics of its input (train mode, or no running stats)."""
    return bn.training or bn.running_mean is None


def same_padding(kernel_size: int, dilation: int) -> Tuple[int, int]:
    """``(before, after)``: the zero padding of one axis that keeps a stride-1 window's output the
    size of its input, as torch's ``padding='same'`` (an odd total puts the extra pixel after)."""
    total = dilation * (kernel_size - 1)
    return total // 2, total - total // 2


def check_submanifold_conv(conv: nn.Conv2d) -> None:
    """Raise ValueError unless ``conv`` keeps the active set in place and reads its weight as
    ``F.conv2d`` does: an ``nn.Conv2d`` (its own forward), stride 1, zero padding that keeps the
    size (``padding='same'``, or ``dilation * (k - 1) / 2`` on each side). Any groups (depthwise
    included), any kernel (odd or even)."""
    kh, kw = conv.kernel_size
    dh, dw = conv.dilation
    symmetric = (dh * (kh - 1)) % 2 == 0 and (dw * (kw - 1)) % 2 == 0
    same = conv.padding == "same" or (symmetric and conv.padding == (dh * (kh - 1) // 2, dw * (kw - 1) // 2))
    if not _own_forward(conv, nn.Conv2d, "forward", "_conv_forward"):
        raise ValueError(f"{type(conv).__name__} overrides nn.Conv2d's forward, so the sparse path (which reads its "
                         f"weight as F.conv2d does) would compute something else: use a plain nn.Conv2d")
    if conv.stride != (1, 1) or not same or conv.padding_mode != "zeros":
        raise ValueError(
            f"a conv on an active set keeps the grid: stride 1 and 'same' zero padding (padding='same', or "
            f"dilation * (k - 1) / 2 on each side); got stride={conv.stride}, kernel={conv.kernel_size}, "
            f"padding={conv.padding}, padding_mode={conv.padding_mode!r}, dilation={conv.dilation} (stage 1 may "
            f"stride: use dilation in stages 2-3)")


def _own_forward(module: nn.Module, base: type, *methods: str) -> bool:
    """Whether ``module`` (an instance of ``base``) runs ``base``'s own ``methods``."""
    return all(getattr(type(module), m) is getattr(base, m) for m in methods)


#: Normalisations that are layer norm over the channels, whatever layout their own forward takes
#: (``nn.LayerNorm(C)``, channels-last; ConvNeXt's ``LayerNorm2d`` of torchvision and timm): the
#: containers call ``F.layer_norm`` over the channels with their weights, never their forward.
LAYER_NORMS = {"torch.nn.modules.normalization.LayerNorm", "torchvision.models.convnext.LayerNorm2d",
               "timm.layers.norm.LayerNorm", "timm.layers.norm.LayerNorm2d"}


def norm_kind(norm: nn.Module, channels: Optional[int] = None) -> str:
    """What ``norm`` is to the containers: ``"identity"`` (a folded batch norm), ``"batch"``
    (BatchNorm2d / SyncBatchNorm), ``"layer"`` (layer norm over the channels, :data:`LAYER_NORMS`)
    or ``"group"`` (GroupNorm; InstanceNorm2d without running statistics: statistics over each
    image's active pixels). ValueError saying why for anything else, or for ``channels`` (the
    input's, if given) that the module does not take."""
    name = type(norm).__name__
    if isinstance(norm, nn.Identity):
        return "identity"
    if isinstance(norm, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        kind, takes = "batch", norm.num_features
    elif isinstance(norm, nn.LayerNorm) and f"{type(norm).__module__}.{type(norm).__qualname__}" in LAYER_NORMS:
        if len(norm.normalized_shape) != 1:
            raise ValueError(f"{name} over {tuple(norm.normalized_shape)}: only a layer norm over the channels "
                             f"(normalized_shape (C,)) is row-local")
        kind, takes = "layer", norm.normalized_shape[0]
    elif isinstance(norm, nn.GroupNorm) and _own_forward(norm, nn.GroupNorm, "forward"):
        kind, takes = "group", norm.num_channels
    elif isinstance(norm, nn.InstanceNorm2d) and _own_forward(norm, nn.InstanceNorm2d, "forward"):
        if norm.track_running_stats:
            raise ValueError(f"{name} with track_running_stats=True is not supported on an active set (its "
                             f"running statistics would have to follow each image's active pixels): use "
                             f"track_running_stats=False, GroupNorm or BatchNorm2d")
        kind, takes = "group", norm.num_features
    else:
        raise ValueError(f"{name} is not a normalisation the feature containers run: use BatchNorm2d, "
                         f"nn.LayerNorm(C) / LayerNorm2d, GroupNorm, InstanceNorm2d or nn.Identity")
    if channels is not None and takes != channels:
        raise ValueError(f"{name} takes {takes} channels, its input has {channels}")
    return kind


def group_norm_params(norm: nn.Module) -> Tuple[int, Optional[torch.Tensor], Optional[torch.Tensor], float]:
    """``(groups, weight, bias, eps)`` of a GroupNorm or InstanceNorm2d (one group per channel)."""
    if isinstance(norm, nn.GroupNorm):
        return norm.num_groups, norm.weight, norm.bias, norm.eps
    return norm.num_features, norm.weight, norm.bias, norm.eps


def layer_norm_rows(norm: nn.LayerNorm, rows: torch.Tensor) -> torch.Tensor:
    """Layer norm over the channels of feature rows ``[..., C] -> [..., C]``."""
    return F.layer_norm(rows, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def group_norm_rows(norm: nn.Module, rows: torch.Tensor, image: torch.Tensor, num_images: int) -> torch.Tensor:
    """Group norm of feature rows ``[N, C]`` with statistics over each image's rows:
    ``image [N]`` (int64) is each row's image, ``num_images`` sizes the statistics (an image
    without rows gets none). Two passes (mean, then the mean of squared deviations, biased), as
    ``F.group_norm``; on device, no host sync. The masked dense path and the sparse path both call
    it, so their arithmetic is the same."""
    groups, weight, bias, eps = group_norm_params(norm)
    n, channels = rows.shape
    grouped = rows.view(n, groups, channels // groups)  # [N, G, C/G]
    count = rows.new_zeros(num_images).index_add(0, image, rows.new_ones(n)).clamp(min=1) * (channels // groups)
    mean = rows.new_zeros(num_images, groups).index_add(0, image, grouped.sum(2)) / count[:, None]  # [images, G]
    centred = grouped - mean.index_select(0, image)[:, :, None]
    var = rows.new_zeros(num_images, groups).index_add(0, image, centred.square().sum(2)) / count[:, None]
    out = (centred * torch.rsqrt(var + eps).index_select(0, image)[:, :, None]).view(n, channels)
    if weight is not None:
        out = out * weight
    return out if bias is None else out + bias


def norm_rows(norm: nn.Module, kind: str, rows: torch.Tensor, image: torch.Tensor, num_images: int) -> torch.Tensor:
    """A norm of ``kind`` (:func:`norm_kind`, not ``"identity"``) over feature rows ``[N, C]``:
    batch statistics of the rows, each row over its channels, or group statistics per image
    (``image``, ``num_images``: as in :func:`group_norm_rows`)."""
    if kind == "batch":
        return batch_norm_rows(norm, rows)
    if kind == "layer":
        return layer_norm_rows(norm, rows)
    return group_norm_rows(norm, rows, image, num_images)


def mean_rows(rows: torch.Tensor, image: torch.Tensor, num_images: int) -> torch.Tensor:
    """``[num_images, C]``: the mean of each image's feature rows ``[N, C]`` (0 for an image
    without rows); ``image [N]`` as in :func:`group_norm_rows`."""
    count = rows.new_zeros(num_images).index_add(0, image, rows.new_ones(rows.shape[0])).clamp(min=1)
    return rows.new_zeros(num_images, rows.shape[1]).index_add(0, image, rows) / count[:, None]


#: Elementwise activation modules (each output element depends on its input element only, with
#: the same function at every pixel): on an active set they are exact. :func:`register_activation`
#: adds more (e.g. your own ``Swish``).
ACTIVATIONS = {nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.CELU, nn.SELU, nn.GELU, nn.SiLU, nn.Mish,
               nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Softsign,
               nn.Tanhshrink, nn.Hardshrink, nn.Softshrink, nn.LogSigmoid, nn.Threshold, nn.Identity}


def register_activation(cls: Type[nn.Module]) -> Type[nn.Module]:
    """Declare the module class ``cls`` an elementwise activation (decorator; returns ``cls``), so
    that ``x.act(cls())`` may run in stages 2-3. Only for functions applied to each element alone:
    anything that mixes pixels or channels is not exact on an active set."""
    ACTIVATIONS.add(cls)
    return cls


def is_activation(module: nn.Module) -> bool:
    """Whether ``module`` is an elementwise activation (:data:`ACTIVATIONS`; its exact class)."""
    return type(module) in ACTIVATIONS


def check_activation(module: nn.Module, channels: Optional[int] = None) -> None:
    """ValueError unless ``module`` is an elementwise activation (a PReLU with one weight or one
    per input channel)."""
    if not is_activation(module):
        raise ValueError(f"{type(module).__name__} is not a known elementwise activation (GELU, SiLU, ReLU6, "
                         f"Hardswish, Sigmoid, ...; sparse_lc.ops.register_activation declares your own)")
    if isinstance(module, nn.PReLU) and channels is not None and module.num_parameters not in (1, channels):
        raise ValueError(f"PReLU has {module.num_parameters} weights, its input {channels} channels")


def run_activation(module: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """``module(tensor)`` for an elementwise activation (:func:`check_activation`; channels in
    dim 1, as in ``[N, C]`` rows and ``[B, C, H, W]`` maps), never changing ``tensor`` (an
    in-place module, e.g. ``nn.ReLU6(inplace=True)``, works on a copy: the input may still feed
    a residual)."""
    check_activation(module, tensor.shape[1])
    return module(tensor.clone() if getattr(module, "inplace", False) else tensor)


def check_linear(linear: nn.Module, channels: Optional[int] = None) -> None:
    """ValueError unless ``linear`` is an ``nn.Linear`` (its own forward) taking ``channels``."""
    if not isinstance(linear, nn.Linear) or not _own_forward(linear, nn.Linear, "forward"):
        raise ValueError(f"x.linear takes an nn.Linear (its own forward), got {type(linear).__name__}")
    if channels is not None and linear.in_features != channels:
        raise ValueError(f"Linear takes {linear.in_features} channels, its input has {channels}")


def scale_vector(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """``weight`` (C values in any shape: ``[C]``, ``[C, 1, 1]``) as ``[C]``; ValueError otherwise."""
    if not isinstance(weight, torch.Tensor) or weight.numel() != channels:
        got = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"x.scale takes a tensor of {channels} values (one per channel), got {got}")
    return weight.reshape(channels)


def concat(parts: Sequence[Features]) -> Features:
    """Channel concatenation of containers on one active set, in order (``torch.cat(..., 1)``)."""
    return parts[0].cat(parts[1:])


def check_max_pool(kernel_size: int, dilation: int) -> int:
    """The 'same' padding of an odd stride-1 pool window; ValueError for an even window."""
    if kernel_size % 2 != 1 or dilation < 1:
        raise ValueError(f"a pool on an active set needs an odd window and dilation >= 1, "
                         f"got kernel_size={kernel_size}, dilation={dilation}")
    return dilation * (kernel_size - 1) // 2
