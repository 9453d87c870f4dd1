"""Sparse feature rows of the active pixels: the sparse path of stages 2 and 3.

:class:`SparseFeatures` is one ``[N, C]`` feature row per active pixel, on an
:class:`~sparse_lc.ops.active_set.ActiveSet` (the pixels, their rulebooks and neighbour tables).
A ``k x k`` conv (k > 1, groups 1) runs on spconv's functional level with the set's cached rulebook
(:mod:`sparse_lc.ops.spconv_backend`, which also fuses bias and ReLU into the kernel on CUDA).

Grouped and depthwise convs, and even kernels (spconv's ``SubMConv2d`` has no groups), run on the
rows through the set's neighbour tables (:mod:`sparse_lc.ops.window`). 1x1 convs, linears,
norms, activations, adds, products, concatenation and pools act on the rows in torch;
statistics over each image's rows (group norm, global pooling) are sums over the rows' batch
index into buffers of one row per image of the set (padding images get their own). Only one op of
a stage needs a value from the device on the host: the ``nonzero`` that finds the active pixels
(:meth:`SparseFeatures.from_dense`, :meth:`SparseFeatures.restrict`).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.timing import section
from . import features as rules
from . import mac_counter
from .active_set import ActiveSet
from .dense import DenseFeatures
from .features import check_max_pool, check_submanifold_conv
from .mac_counter import MacSource, Window
from .spconv_backend import as_dtype, autocast_dtype, krsc_weight, spconv_dtype
from .window import window_conv

__all__ = ["SparseFeatures", "pair_counts"]


class SparseFeatures:
    """Feature rows ``[N, C]`` of the active pixels of a ``[B, C, h, w]`` map, on an :class:`ActiveSet`."""

    __slots__ = ("rows", "active")

    def __init__(self, rows: torch.Tensor, active: ActiveSet):
        self.rows = rows
        self.active = active

    # ----------------------------------------------------------------- construction / export
    @classmethod
    def from_dense(cls, dense: torch.Tensor, mask: torch.Tensor, prefix: str) -> "SparseFeatures":
        """Gather the rows of ``dense [B, C, h, w]`` where ``mask [B, h, w]`` is True, in
        row-major (batch, y, x) order. One host sync. The result may have no row: no op may run
        on it then (spconv cannot run on zero active sites; the cascade skips such stages)."""
        active = ActiveSet.from_mask(mask, prefix)
        channels = dense.shape[1]
        rows = dense.permute(0, 2, 3, 1).reshape(-1, channels).index_select(0, active.flat)
        return cls(rows, active)

    def padded(self, num_rows: int) -> "SparseFeatures":
        """These rows with rows of zeros appended up to ``num_rows``, on :meth:`ActiveSet.padded`."""
        pad = self.rows.new_zeros(num_rows - self.num_active, self.num_channels)
        return SparseFeatures(torch.cat([self.rows, pad]), self.active.padded(num_rows))

    def restrict(self, mask: torch.Tensor, prefix: str) -> "SparseFeatures":
        """The rows whose pixel is True in ``mask [B, h, w]``, on a new set for a new stage.

        ``mask`` must be a subset of this active set (the next stage's pixels are a subset of
        this stage's; checked only with :func:`debug_checks`). Rulebooks are not carried over:
        the next stage builds its own. One host sync.
        """
        subset, rows = self.active.subset(mask, prefix)
        return SparseFeatures(self.rows.index_select(0, rows), subset)

    def to_dense(self) -> torch.Tensor:
        """Scatter the rows into a ``[B, C, h, w]`` map (channels-last in memory) that is zero
        outside the active set."""
        active = self.active
        spare = 1 if active.num_pad else 0  # padding rows land on one spare row past the grid
        out = self.rows.new_zeros(active.positions + spare, self.num_channels)
        out = out.index_put_((active.flat,), self.rows)[:active.positions]  # in place: a fresh map (autograd-safe)
        return out.view(active.grid_batch, *active.spatial_shape, self.num_channels).permute(0, 3, 1, 2)

    # ----------------------------------------------------------------------------- accessors
    @property
    def num_channels(self) -> int:
        return self.rows.shape[1]

    @property
    def num_active(self) -> int:
        return self.rows.shape[0]

    def rulebooks(self) -> Dict[str, object]:
        """The rulebooks built so far on this active set, by :func:`rulebook_key`."""
        return self.active.rulebooks()

    def _record(self, module: nn.Module, kind: str, coefficient: int, window: Optional[Window] = None,
                pairs: Optional[torch.Tensor] = None) -> None:
        """Count ``coefficient`` MACs per active row, or per (row, neighbour) pair of ``window``
        (``pairs``: their number, from the conv's rulebook)."""
        if mac_counter.counting():
            count = self.num_active if window is None else pairs
            mac_counter.record(module, kind, coefficient * count, self.num_active, self.active.positions,
                               MacSource(module, coefficient, window))

    def _same_set(self, op: str, others: Sequence["SparseFeatures"]) -> None:
        """Features derived from one another share their set object: an identity test, no
        tensor compared. Sets gathered separately are compared by value (a host sync)."""
        for other in others:
            if other.active is not self.active and not self.active.same_pixels(other.active):
                raise ValueError(f"{op}: the sparse tensors have different active sets")

    # --------------------------------------------------------------------------- block ops
    def conv(self, conv: nn.Conv2d) -> "SparseFeatures":
        return self._conv(conv, relu=False)

    def conv_norm_relu(self, conv: nn.Conv2d, norm: nn.Module) -> "SparseFeatures":
        """``conv -> norm -> ReLU``; with batch norm folded into the conv (``norm`` is
        ``nn.Identity``) one step, which on CUDA in inference is one spconv kernel."""
        if isinstance(norm, nn.Identity):
            return self._conv(conv, relu=True)
        return self._conv(conv, relu=False).norm(norm).relu()

    def _conv(self, conv: nn.Conv2d, relu: bool) -> "SparseFeatures":
        check_submanifold_conv(conv)
        if conv.groups != 1 or conv.kernel_size[0] % 2 == 0 or conv.kernel_size[1] % 2 == 0:
            out = self._window_conv(conv)
            return SparseFeatures(torch.relu(out) if relu else out, self.active)
        if conv.kernel_size == (1, 1):
            self._record(conv, "conv", conv.in_channels * conv.out_channels)
            weight = as_dtype(conv.weight[:, :, 0, 0], self.rows.dtype)
            bias = None if conv.bias is None else as_dtype(conv.bias, self.rows.dtype)
            out = F.linear(self.rows, weight, bias)
            return SparseFeatures(torch.relu(out) if relu else out, self.active)
        device = self.rows.device.type
        dtype = spconv_dtype(self.rows)
        rows = as_dtype(self.rows, dtype)
        weight = krsc_weight(conv.weight, dtype)
        bias = None if conv.bias is None else as_dtype(conv.bias, dtype)
        # under autocast, spconv's own matmuls (the CPU's torch.mm) would change dtype under it
        outside_autocast = torch.autocast(device, enabled=False) if autocast_dtype(device) else nullcontext()
        with section("spconv"), outside_autocast:  # benchmarks split a stage's time into spconv's and ours
            rulebook = self.active.rulebook(conv.kernel_size, conv.dilation)
            out = rulebook.conv(rows if rows.is_contiguous() else rows.contiguous(), weight, bias, relu)
        if mac_counter.counting():
            self._record(conv, "conv", conv.in_channels * conv.out_channels, (conv.kernel_size, conv.dilation),
                         rulebook.pair_count())
        return SparseFeatures(out, self.active)

    def _window_conv(self, conv: nn.Conv2d) -> torch.Tensor:
        """A grouped, depthwise or even-kernel conv on the rows, through the window's neighbour
        table (:func:`~sparse_lc.ops.window.window_conv`): ``[N, C_in] -> [N, C_out]``."""
        window = None if conv.kernel_size == (1, 1) else (conv.kernel_size, conv.dilation)
        neighbours = None if window is None else self.active.neighbours(*window)
        if mac_counter.counting():
            self._record(conv, "conv", conv.in_channels // conv.groups * conv.out_channels, window,
                         None if window is None else self.active.pair_count(*window))
        return window_conv(self.rows, conv.weight, conv.bias, neighbours, conv.groups)

    def norm(self, norm: nn.Module) -> "SparseFeatures":
        """See :meth:`~sparse_lc.ops.Features.norm`; group statistics over each image's rows."""
        kind = rules.norm_kind(norm, self.num_channels)
        if kind == "identity":  # folded into the conv before it (see layers.fuse)
            return self
        self._record(norm, "norm", self.num_channels)
        return SparseFeatures(rules.norm_rows(norm, kind, self.rows, self._images(), self.active.batch_size),
                              self.active)

    def _images(self) -> torch.Tensor:
        """``[N]`` int64: each row's image (padding rows: their own extra images)."""
        return self.active.indices[:, 0].long()

    def relu(self) -> "SparseFeatures":
        return SparseFeatures(torch.relu(self.rows), self.active)

    def linear(self, linear: nn.Linear) -> "SparseFeatures":
        rules.check_linear(linear, self.num_channels)
        self._record(linear, "conv", linear.in_features * linear.out_features)
        return SparseFeatures(linear(self.rows), self.active)

    def act(self, activation: nn.Module) -> "SparseFeatures":
        return SparseFeatures(rules.run_activation(activation, self.rows), self.active)

    def scale(self, weight: torch.Tensor) -> "SparseFeatures":
        return SparseFeatures(self.rows * rules.scale_vector(weight, self.num_channels), self.active)

    def mul(self, other: Union["SparseFeatures", DenseFeatures]) -> "SparseFeatures":
        """See :meth:`~sparse_lc.ops.Features.mul`: rows on the same set, or image-level features
        ``[B', C, 1, 1]`` (:meth:`global_pool`), each row multiplied by its image's."""
        if isinstance(other, SparseFeatures):
            self._same_set("mul", [other])
            return SparseFeatures(self.rows * other.rows, self.active)
        image_rows = other.to_dense()[:, :, 0, 0]  # [B', C]
        return SparseFeatures(self.rows * image_rows.index_select(0, self._images()), self.active)

    def global_pool(self) -> DenseFeatures:
        """See :meth:`~sparse_lc.ops.Features.global_pool`: ``[B', C, 1, 1]``, one per image of
        the set (B' = :attr:`ActiveSet.batch_size`: padding images included, fed by padding only)."""
        pooled = rules.mean_rows(self.rows, self._images(), self.active.batch_size)
        return DenseFeatures(pooled[:, :, None, None])

    def pool(self, pool: nn.Module) -> "SparseFeatures":
        """Refused, as on a masked dense map: a pooling module reads pixels outside the set."""
        raise ValueError("pooling is not defined on an active set")

    def add(self, other: "SparseFeatures", alpha: float = 1.0) -> "SparseFeatures":
        self._same_set("add", [other])
        return SparseFeatures(torch.add(self.rows, other.rows, alpha=alpha), self.active)

    def cat(self, others: Sequence["SparseFeatures"]) -> "SparseFeatures":
        self._same_set("cat", others)
        return SparseFeatures(torch.cat([self.rows, *(o.rows for o in others)], dim=1), self.active)

    def max_pool(self, kernel_size: int, dilation: int = 1) -> "SparseFeatures":
        """Max over the active pixels of each window (see :class:`~sparse_lc.ops.Features`).

        Each row's neighbours come from the set's neighbour table (raster order, -1: inactive).
        Without gradient, an inactive neighbour is read as the centre (always active, so the
        maximum is unchanged) and the maximum is taken offset by offset, in place: no
        ``[N, k * k, C]`` buffer. With gradient, the winning row of each channel is chosen
        without gradient, scanning in raster order with a strict ``>`` (``F.max_pool2d``'s tie
        rule; an inactive neighbour reads a row of -inf), then gathered with gradient, so
        gradients equal the dense path's.
        """
        rows = self.rows
        check_max_pool(kernel_size, dilation)
        if not (torch.is_grad_enabled() and rows.requires_grad):
            best = None
            for neighbour in self.active.neighbours_or_self(kernel_size, dilation):  # [N] per offset
                values = rows.index_select(0, neighbour)
                best = values if best is None else torch.maximum(best, values, out=best)
            return SparseFeatures(best, self.active)
        neighbours = self.active.neighbours(kernel_size, dilation)  # [k * k, N]
        with torch.no_grad():
            padded = torch.cat([rows, rows.new_full((1, rows.shape[1]), float("-inf"))])  # -1 reads the last row
            best, winner = padded.new_full(rows.shape, float("-inf")), neighbours.new_zeros(rows.shape)
            for neighbour in neighbours:
                values = padded.index_select(0, neighbour.remainder(len(padded)))  # [N, C]
                better = values > best
                best = torch.where(better, values, best)
                winner = torch.where(better, neighbour[:, None], winner)
        return SparseFeatures(rows.gather(0, winner), self.active)


def pair_counts(features: SparseFeatures) -> List[Tuple[str, int]]:
    """``(rulebook name, pairs)`` for each rulebook built so far on ``features``' active set."""
    return [(key, int(book.pair_count())) for key, book in features.rulebooks().items()]
