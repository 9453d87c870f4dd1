"""Dense feature maps, optionally restricted to an active set (the dense reference path)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import features as rules
from . import mac_counter
from .features import check_max_pool, check_submanifold_conv, uses_batch_statistics


def _run_conv(conv: nn.Conv2d, data: torch.Tensor) -> torch.Tensor:
    """``conv(data)``; a 'same' conv whose padding is not symmetric (an even kernel at an odd
    dilation) is padded explicitly, as torch would internally (without its warning)."""
    if conv.padding != "same" or conv.stride != (1, 1):
        return conv(data)
    (top, bottom), (left, right) = (rules.same_padding(k, d) for k, d in zip(conv.kernel_size, conv.dilation))
    if top == bottom and left == right:
        return conv(data)
    return F.conv2d(F.pad(data, (left, right, top, bottom)), conv.weight, conv.bias, 1, 0, conv.dilation, conv.groups)


class DenseFeatures:
    """A ``[B, C, H, W]`` map, optionally with an active mask ``[B, H, W]`` (bool).

    Without a mask every op is the plain torch op (stage 1 runs this way, strides included).
    With a mask the container is the *dense reference* of a submanifold sparse network:
    features outside the mask are zero after every op, a conv reads zeros there, batch-norm
    statistics in train mode come from the active pixels only. It computes on the full map, so
    its cost is that of the dense network whatever the mask: it is the oracle for the sparse
    path and the "dense run" that profiling compares against.
    """

    def __init__(self, data: torch.Tensor, mask: Optional[torch.Tensor] = None):
        if mask is not None and mask.shape != (data.shape[0], *data.shape[2:]):
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match features {tuple(data.shape)}")
        self.data = data if mask is None else data * self._float_mask(mask, data.dtype)
        self.mask = mask

    @staticmethod
    def _float_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return mask[:, None].to(dtype)  # [B, 1, H, W]

    def _masked(self, data: torch.Tensor) -> "DenseFeatures":
        out = DenseFeatures.__new__(DenseFeatures)
        out.data = data if self.mask is None else data * self._float_mask(self.mask, data.dtype)
        out.mask = self.mask
        return out

    def _same_mask(self, other: "DenseFeatures") -> bool:
        if other.mask is self.mask:  # the branches of one block share their input's mask object
            return True
        return other.mask is not None and self.mask is not None and torch.equal(other.mask, self.mask)

    def _unmasked(self, data: torch.Tensor) -> "DenseFeatures":
        """Wrap ``data`` that is already zero outside the mask."""
        out = DenseFeatures.__new__(DenseFeatures)
        out.data, out.mask = data, self.mask
        return out

    @property
    def num_channels(self) -> int:
        return self.data.shape[1]

    def conv(self, conv: nn.Conv2d) -> "DenseFeatures":
        if self.mask is not None:
            check_submanifold_conv(conv)
        out = _run_conv(conv, self.data)
        if mac_counter.counting():
            positions = out.shape[0] * out.shape[2] * out.shape[3]
            per_position = conv.out_channels * conv.in_channels // conv.groups * conv.weight[0, 0].numel()
            mac_counter.record(conv, "conv", positions * per_position, positions, positions)
        return self._masked(out)

    def conv_norm_relu(self, conv: nn.Conv2d, norm: nn.Module) -> "DenseFeatures":
        return self.conv(conv).norm(norm).relu()

    def pool(self, pool: nn.Module) -> "DenseFeatures":
        """A pooling module (stage 1 only: pooling would leak across an active set's border)."""
        if self.mask is not None:
            raise ValueError("pooling is not defined on an active set")
        return DenseFeatures(pool(self.data))

    def norm(self, norm: nn.Module) -> "DenseFeatures":
        """See :meth:`Features.norm`. Without a mask the module itself runs (real group norm over
        the whole image); with one, statistics come from the active pixels, as the sparse path's."""
        kind = rules.norm_kind(norm, self.num_channels)
        if kind == "identity":  # folded into the conv before it (see layers.fuse)
            return self
        if mac_counter.counting():
            positions = self.data.shape[0] * self.data.shape[2] * self.data.shape[3]
            mac_counter.record(norm, "norm", positions * self.num_channels, positions, positions)
        if kind == "layer":
            return self._masked(self._channels_last(lambda rows: rules.layer_norm_rows(norm, rows)))
        if self.mask is None:
            return self._unmasked(norm(self.data))
        if kind == "batch" and not uses_batch_statistics(norm):
            return self._masked(norm(self.data))
        # Statistics over the active pixels only (group norm: each image's), as the sparse path sees them.
        channels_last = self.data.permute(0, 2, 3, 1)  # [B, H, W, C]
        image = self.mask.nonzero()[:, 0]  # each active pixel's image, in the order of the rows
        rows = rules.norm_rows(norm, kind, channels_last[self.mask], image, self.mask.shape[0])  # [N, C]
        out = rows.new_zeros(channels_last.shape)
        out[self.mask] = rows
        return self._unmasked(out.permute(0, 3, 1, 2))

    def _channels_last(self, fn) -> torch.Tensor:
        """``fn`` applied over the channels of every pixel: ``[B, C, H, W]`` viewed as rows ``[B, H, W, C]``."""
        return fn(self.data.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def linear(self, linear: nn.Linear) -> "DenseFeatures":
        rules.check_linear(linear, self.num_channels)
        if mac_counter.counting():
            positions = self.data.shape[0] * self.data.shape[2] * self.data.shape[3]
            mac_counter.record(linear, "conv", positions * linear.in_features * linear.out_features, positions,
                               positions)
        return self._masked(self._channels_last(linear))

    def act(self, activation: nn.Module) -> "DenseFeatures":
        return self._masked(rules.run_activation(activation, self.data))

    def scale(self, weight: torch.Tensor) -> "DenseFeatures":
        return self._unmasked(self.data * rules.scale_vector(weight, self.num_channels).view(1, -1, 1, 1))

    def mul(self, other: "DenseFeatures") -> "DenseFeatures":
        """See :meth:`Features.mul` (image-level ``other``: ``[B, C, 1, 1]``, broadcast)."""
        image_level = other.data.shape[2:] == (1, 1)
        if not image_level and (other.data.shape[2:] != self.data.shape[2:] or not self._same_mask(other)):
            raise ValueError("mul: the feature maps have different sizes or active sets")
        return self._unmasked(self.data * other.data)

    def global_pool(self) -> "DenseFeatures":
        """See :meth:`Features.global_pool`: ``[B, C, 1, 1]``, unmasked."""
        if self.mask is None:
            return DenseFeatures(self.data.mean((2, 3), keepdim=True))
        rows = self.data.permute(0, 2, 3, 1)[self.mask]
        pooled = rules.mean_rows(rows, self.mask.nonzero()[:, 0], self.mask.shape[0])  # [B, C]
        return DenseFeatures(pooled[:, :, None, None])

    def relu(self) -> "DenseFeatures":
        return self._unmasked(torch.relu(self.data))

    def add(self, other: "DenseFeatures", alpha: float = 1.0) -> "DenseFeatures":
        return self._unmasked(torch.add(self.data, other.data, alpha=alpha))

    def cat(self, others: Sequence["DenseFeatures"]) -> "DenseFeatures":
        for other in others:
            if other.data.shape[2:] != self.data.shape[2:] or not self._same_mask(other):
                raise ValueError("cat: the feature maps have different sizes or active sets")
        return self._unmasked(torch.cat([self.data, *(o.data for o in others)], dim=1))

    def max_pool(self, kernel_size: int, dilation: int = 1) -> "DenseFeatures":
        """Stride-1 'same' max pool; with a mask, inactive pixels are -inf to the window (so the
        maximum is over active pixels only) and the output is zero outside the mask."""
        padding = check_max_pool(kernel_size, dilation)
        active = None if self.mask is None else self.mask[:, None]  # [B, 1, H, W]
        data = self.data if active is None else self.data.masked_fill(~active, float("-inf"))
        # pad explicitly: max_pool2d's own padding may not exceed half the (undilated) window
        data = F.pad(data, (padding,) * 4, value=float("-inf"))
        pooled = F.max_pool2d(data, kernel_size, stride=1, dilation=dilation)
        # where(), not a product: a window without any active pixel holds -inf, and -inf * 0 = nan
        return self._unmasked(pooled if active is None else torch.where(active, pooled, 0.0))

    def restrict(self, mask: torch.Tensor, prefix: str = "") -> "DenseFeatures":
        """The same map restricted to ``mask [B, H, W]`` (a subset of the current active set;
        an all-True mask keeps the map unmasked)."""
        return DenseFeatures(self.data, None if mask.all() else mask)

    def to_dense(self) -> torch.Tensor:
        """``[B, C, H, W]``, zero outside the active mask."""
        return self.data
