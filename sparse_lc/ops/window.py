"""Convolutions of feature rows through a neighbour table: the grouped, depthwise and even-kernel
convs that spconv's ``SubMConv2d`` does not have (it has no ``groups``).

A ``kh x kw`` window's neighbour table (:meth:`~sparse_lc.ops.active_set.ActiveSet.neighbours`,
``[kh * kw, N]``, -1 where the neighbour is inactive) says which row each output row reads at
each kernel offset. The conv is a sum over offsets: gather the rows of one offset (an inactive
neighbour reads a row of zeros), multiply by that offset's weight (per channel for a depthwise
conv, one small matmul per group otherwise), accumulate. Memory stays at a few ``[N, C]``
buffers whatever the kernel: no ``[k * k, N, C]`` gather, in the forward pass or the backward
(:class:`WindowConv` recomputes each offset's rows there and scatters the input gradient back
with ``index_add``). Exact against ``F.conv2d(..., groups=g)`` on the masked dense map, which
reads zeros outside the active set too.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch.autograd.function import once_differentiable

__all__ = ["WindowConv", "window_conv"]


def window_conv(rows: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                neighbours: Optional[torch.Tensor], groups: int) -> torch.Tensor:
    """``rows [N, C_in]`` convolved with ``weight [C_out, C_in / groups, kh, kw]`` (torch layout)
    over the window of ``neighbours [kh * kw, N]`` (None: a 1x1 conv, each row its own
    neighbour) -> ``[N, C_out]``, plus ``bias``. Differentiable in ``rows``, ``weight`` and
    ``bias`` (:class:`WindowConv`)."""
    return WindowConv.apply(rows, weight.to(rows.dtype), None if bias is None else bias.to(rows.dtype), neighbours,
                            groups)


class WindowConv(torch.autograd.Function):
    """:func:`window_conv` with a backward pass that recomputes each offset's gathered rows
    instead of keeping them (memory: the inputs, not ``kh * kw`` copies of them)."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                neighbours: Optional[torch.Tensor], groups: int) -> torch.Tensor:
        taps = _taps(weight)
        ctx.save_for_backward(rows, taps, neighbours)
        ctx.groups, ctx.has_bias, ctx.kernel = groups, bias is not None, tuple(weight.shape[2:])
        out = rows.new_zeros(rows.shape[0], weight.shape[0])
        for offset, gathered in _offsets(rows, neighbours):
            _accumulate(out, gathered, taps[offset], groups)
        return out if bias is None else out.add_(bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        rows, taps, neighbours = ctx.saved_tensors
        groups = ctx.groups
        grad_out = grad_out.contiguous()
        need_rows, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_rows = rows.new_zeros(rows.shape[0] + 1, rows.shape[1]) if need_rows else None  # + the zero row
        grad_taps = torch.zeros_like(taps) if need_weight else None
        for offset, gathered in _offsets(rows, neighbours, gather=need_weight):
            if need_rows:  # each output row's gradient, sent back to the row it read
                contribution = _transpose_product(grad_out, taps[offset], groups)
                target = torch.arange(rows.shape[0], device=rows.device) if neighbours is None else neighbours[offset]
                grad_rows.index_add_(0, target.remainder(rows.shape[0] + 1), contribution)  # -1: the zero row
            if need_weight:
                grad_taps[offset] = _weight_product(gathered, grad_out, groups)
        grad_weight = None
        if need_weight:  # [kh * kw, C_out, C_in/G] -> [C_out, C_in/G, kh, kw]
            grad_weight = grad_taps.view(*ctx.kernel, *taps.shape[1:]).permute(2, 3, 0, 1)
        return (grad_rows[:-1] if need_rows else None, grad_weight,
                grad_out.sum(0) if ctx.has_bias and need_bias else None, None, None)


def _offsets(rows: torch.Tensor, neighbours: Optional[torch.Tensor], gather: bool = True):
    """``(offset, rows read at that offset [N, C])`` for each kernel offset; an inactive
    neighbour (-1) reads a row of zeros (the last row of a padded copy). One gather buffer."""
    if neighbours is None:
        yield 0, rows
        return
    if not gather:
        yield from ((offset, None) for offset in range(neighbours.shape[0]))
        return
    padded = torch.cat([rows, rows.new_zeros(1, rows.shape[1])])
    buffer = rows.new_empty(rows.shape)
    for offset, neighbour in enumerate(neighbours):
        yield offset, torch.index_select(padded, 0, neighbour.remainder(padded.shape[0]), out=buffer)


def _taps(weight: torch.Tensor) -> torch.Tensor:
    """``[kh * kw, C_out, C_in / groups]``, contiguous: the weight of each kernel offset (raster
    order), each a dense block (a strided slice of a channels-last weight is several times
    slower to multiply by)."""
    out_channels, per_in, kh, kw = weight.shape
    return weight.permute(2, 3, 0, 1).reshape(kh * kw, out_channels, per_in).contiguous()


def _accumulate(out: torch.Tensor, gathered: torch.Tensor, w: torch.Tensor, groups: int) -> None:
    """``out [N, C_out] += gathered [N, C_in]`` times one offset's grouped weight ``w``, in place."""
    per_in, per_out = w.shape[1], w.shape[0] // groups
    if groups == 1:
        out.addmm_(gathered, w.t())
    elif per_in == 1 and per_out == 1:  # depthwise: one weight per channel
        out.addcmul_(gathered, w[:, 0])
    else:
        out.add_(_grouped_mm(gathered, w.view(groups, per_out, per_in).transpose(1, 2), groups))


def _transpose_product(grad_out: torch.Tensor, w: torch.Tensor, groups: int) -> torch.Tensor:
    """``[N, C_in]``: ``grad_out [N, C_out]`` times the transposed grouped weight ``w``."""
    per_in, per_out = w.shape[1], w.shape[0] // groups
    if groups == 1:
        return grad_out @ w
    if per_in == 1 and per_out == 1:
        return grad_out * w[:, 0]
    return _grouped_mm(grad_out, w.view(groups, per_out, per_in), groups)


def _weight_product(gathered: torch.Tensor, grad_out: torch.Tensor, groups: int) -> torch.Tensor:
    """``[C_out, C_in / groups]``: the gradient of one offset's weight, from the rows it read."""
    n, per_in, per_out = gathered.shape[0], gathered.shape[1] // groups, grad_out.shape[1] // groups
    if groups == 1:
        return grad_out.t() @ gathered
    if per_in == 1 and per_out == 1:
        return (gathered * grad_out).sum(0)[:, None]
    product = torch.bmm(grad_out.view(n, groups, per_out).permute(1, 2, 0),  # [G, C_out/G, N]
                        gathered.view(n, groups, per_in).transpose(0, 1))  # [G, N, C_in/G]
    return product.reshape(groups * per_out, per_in)  # [G, C_out/G, C_in/G] -> [C_out, C_in/G]


def _grouped_mm(x: torch.Tensor, w: torch.Tensor, groups: int) -> torch.Tensor:
    """``x [N, G * a]`` times ``w [G, a, b]``, group by group -> ``[N, G * b]``."""
    n = x.shape[0]
    return torch.bmm(x.view(n, groups, -1).transpose(0, 1), w).transpose(0, 1).reshape(n, -1)
