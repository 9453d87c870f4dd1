"""The feature-container interface that lets one block definition run on two representations.

A block (see :mod:`sparse_lc.layers`) never touches a tensor directly. It calls
``x.conv(module)``, ``x.norm(module)``, ``x.relu()`` (or the three at once,
``x.conv_norm_relu(conv, norm)``), ``x.add(other, alpha)``, ``x.cat(others)`` and
``x.max_pool(k, dilation)`` on a container, and the container decides how to run that step:

* :class:`~sparse_lc.ops.dense.DenseFeatures` holds a ``[B, C, H, W]`` map and, optionally, an
  active mask. Without a mask it is an ordinary dense network (stage 1). With a mask it is the
  *dense reference* of a submanifold network: every output is zeroed outside the active set.
* :class:`~sparse_lc.ops.sparse.SparseFeatures` holds one ``[N, C]`` feature row per active
  pixel (on an :class:`~sparse_lc.ops.sparse.ActiveSet`) and runs spconv's submanifold
  convolution on them.

Both share the canonical weights of ordinary ``nn.Conv2d`` / ``nn.BatchNorm2d`` modules (torch
layout ``[out, in, kh, kw]``), so a torchvision state_dict loads straight into the model.
"""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn


@runtime_checkable
class Features(Protocol):
    """What every feature container offers to the blocks."""

    def conv(self, conv: nn.Conv2d) -> "Features": ...

    def norm(self, bn: nn.BatchNorm2d) -> "Features": ...

    def relu(self) -> "Features": ...

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
    """Run an ``nn.Sequential`` of Conv2d / BatchNorm2d / ReLU modules (nested allowed) on a container."""
    for module in modules:
        if isinstance(module, nn.Sequential):
            x = run_sequential(x, module)
        elif isinstance(module, nn.Conv2d):
            x = x.conv(module)
        elif isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.Identity)):
            x = x.norm(module)
        elif isinstance(module, nn.ReLU):
            x = x.relu()
        else:
            raise TypeError(f"run_sequential: unsupported module {type(module).__name__}")
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


def check_submanifold_conv(conv: nn.Conv2d) -> None:
    """Raise ValueError unless ``conv`` keeps the active set in place (stride 1, 'same' padding)."""
    kh, kw = conv.kernel_size
    dh, dw = conv.dilation
    odd = kh % 2 == 1 and kw % 2 == 1
    same = conv.padding == "same" or conv.padding == (dh * (kh - 1) // 2, dw * (kw - 1) // 2)
    if conv.stride != (1, 1) or conv.groups != 1 or not (odd and same) or conv.padding_mode != "zeros":
        raise ValueError(
            f"a conv on an active set must have stride 1, groups 1, an odd kernel and 'same' zero "
            f"padding (dilation * (k - 1) / 2); got stride={conv.stride}, groups={conv.groups}, "
            f"kernel={conv.kernel_size}, padding={conv.padding}, padding_mode={conv.padding_mode!r}, "
            f"dilation={conv.dilation}")


def concat(parts: Sequence[Features]) -> Features:
    """Channel concatenation of containers on one active set, in order (``torch.cat(..., 1)``)."""
    return parts[0].cat(parts[1:])


def check_max_pool(kernel_size: int, dilation: int) -> int:
    """The 'same' padding of an odd stride-1 pool window; ValueError for an even window."""
    if kernel_size % 2 != 1 or dilation < 1:
        raise ValueError(f"a pool on an active set needs an odd window and dilation >= 1, "
                         f"got kernel_size={kernel_size}, dilation={dilation}")
    return dilation * (kernel_size - 1) // 2
