"""Sparse feature rows of the active pixels, convolved by spconv: the only module that imports spconv.

The pixels a later stage computes form an :class:`ActiveSet`: their coordinates (``indices``,
``[N, 3]`` int32: batch, y, x, in row-major order, as spconv wants) and what every op on them
shares: one spconv rulebook per kernel size and dilation (built by the first conv that needs
it, whatever branch of a block that conv is in) and one neighbour table per pool window.
:class:`SparseFeatures` is one ``[N, C]`` feature row per active pixel, on an active set.

A ``k x k`` conv (k > 1) calls spconv's functional level with the cached rulebook, no
``SparseConvTensor`` and no spconv module in between:

* on the CPU, spconv's Native algorithm (the only one that runs there); bias and ReLU are
  applied here, in torch, after the conv;
* on CUDA, the mask implicit GEMM; in inference (no gradient) the bias and a ReLU that follows
  the conv (:meth:`SparseFeatures.conv_norm_relu` with batch norm folded) run in the kernel's
  epilogue. spconv fuses a residual add only in int8, so adds stay torch adds.

Grouped and depthwise convs, and even kernels (spconv's ``SubMConv2d`` has no groups), run on the
rows through the set's neighbour tables (:mod:`sparse_lc.ops.window`). 1x1 convs, linears,
norms, activations, adds, products, concatenation and pools act on the rows in torch;
statistics over each image's rows (group norm, global pooling) are sums over the rows' batch
index into buffers of one row per image of the set (padding images get their own). Only one op of
a stage needs a value from the device on the host: the ``nonzero`` that finds the active pixels
(:meth:`SparseFeatures.from_dense`, :meth:`SparseFeatures.restrict`).
"""
from __future__ import annotations

import importlib
import logging
import os
import warnings
from contextlib import nullcontext
from functools import lru_cache
from types import ModuleType
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.timing import section
from . import features as rules
from . import mac_counter
from .dense import DenseFeatures
from .features import check_max_pool, check_submanifold_conv
from .mac_counter import MacSource, Window
from .window import window_conv

if TYPE_CHECKING:
    from spconv.core import ConvAlgo

# spconv asks torch.fx whether it is tracing on every conv; torch logs a deprecation note for that.
logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)

__all__ = ["ActiveSet", "SparseFeatures", "debug_checks", "pair_counts", "rulebook_key", "set_debug_checks",
           "spconv_algo"]

_DEBUG = {"checks": os.environ.get("SPARSE_LC_DEBUG", "") not in ("", "0")}


def debug_checks() -> bool:
    """Whether the checks that cost a host sync run (``SPARSE_LC_DEBUG=1``, or
    :func:`set_debug_checks`): that a restricted set is a subset of its active set. Off by
    default: the cascade builds its sets nested, so the check can only fail on misuse."""
    return _DEBUG["checks"]


def set_debug_checks(enabled: bool) -> bool:
    """Turn the debug checks on or off; returns the previous setting."""
    previous, _DEBUG["checks"] = _DEBUG["checks"], bool(enabled)
    return previous


@lru_cache(maxsize=None)
def _import_spconv(name: str) -> ModuleType:
    """Import an spconv module on first use: loading spconv takes seconds, and only the
    sparse stages need it (``sparse-lc --help``, dense runs and data checks never do)."""
    with warnings.catch_warnings():  # spconv 2.3 still uses the deprecated torch.cuda.amp decorators
        warnings.simplefilter("ignore", FutureWarning)
        return importlib.import_module(name)


def spconv_algo(device: torch.device) -> ConvAlgo:
    """The spconv algorithm for ``device``: Native on CPU (the only one that runs there),
    MaskImplicitGemm on CUDA."""
    algo = _import_spconv("spconv.core").ConvAlgo
    return algo.Native if device.type == "cpu" else algo.MaskImplicitGemm


Pair = Union[int, Tuple[int, int]]


def _pair(value: Pair) -> Tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def rulebook_key(prefix: str, kernel_size: Tuple[int, int], dilation: Tuple[int, int]) -> str:
    """The name of a stage's rulebook for one kernel size and dilation (``"stage2/k3x3d2x2"``)."""
    return f"{prefix}/k{kernel_size[0]}x{kernel_size[1]}d{dilation[0]}x{dilation[1]}"


def _activation(relu: bool):
    activation = _import_spconv("cumm.tensorview").gemm.Activation
    return activation.ReLU if relu else activation.None_


def _krsc_weight(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[out, in, kh, kw]`` (torch) -> ``[out, kh, kw, in]`` (spconv KRSC), contiguous, in ``dtype``.

    A weight in channels_last memory format (as :class:`~sparse_lc.LayerCascade` keeps them) is
    already laid out as KRSC, so this is a free view; any other layout costs one copy. Nothing is
    cached, so an update by any means (optimizer, ``.data``, ``load_state_dict``) is always seen.
    """
    return _as(weight.permute(0, 2, 3, 1), dtype).contiguous()


def _as(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor`` in ``dtype``; itself, without dispatching an op, when it already is."""
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def _spconv_dtype(rows: torch.Tensor) -> torch.dtype:
    """The dtype spconv computes ``rows`` in: their own, or under autocast the autocast dtype
    where spconv has kernels for it (float16 on CUDA), else float32. ValueError for a dtype
    spconv has no kernels for (bfloat16, outside autocast)."""
    device = rows.device.type
    wanted = _autocast_dtype(device)
    if wanted is not None:
        return wanted if wanted == torch.float16 and device == "cuda" else torch.float32
    supported = (torch.float32, torch.float16) + ((torch.float64,) if device == "cpu" else ())
    if rows.dtype not in supported:
        raise ValueError(f"spconv on {device} runs in {', '.join(str(d)[6:] for d in supported)}, not "
                         f"{str(rows.dtype)[6:]} (it has no bfloat16 kernels; float64 on the CPU only): run the "
                         f"sparse stages in float16 or float32")
    return rows.dtype


def _autocast_dtype(device: str) -> Optional[torch.dtype]:
    """The dtype autocast computes in on this device type, or None outside autocast."""
    if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4
        return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
    if device == "cuda":
        return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None
    return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None


class NativeRulebook:
    """A submanifold rulebook of spconv's Native algorithm (CPU): for each kernel offset, the
    pairs (input row, output row) of active neighbours.

    Native stores only half of the non-centre offsets (each symmetric pair serves both ways) and
    leaves the centre out (a plain matmul over all rows); :meth:`pair_count` undoes both.
    """

    def __init__(self, active: "ActiveSet", kernel_size: Tuple[int, int], dilation: Tuple[int, int]):
        ops = _import_spconv("spconv.pytorch.ops")
        _, self.pairs, self.pair_num = ops.get_indice_pairs(
            active.indices, active.batch_size, list(active.spatial_shape), spconv_algo(active.indices.device),
            list(kernel_size), [1, 1], [0, 0], list(dilation), [0, 0], True, False)
        self.num_rows = active.num_rows

    def conv(self, rows: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
             relu: bool) -> torch.Tensor:
        """``rows [N, C_in]``, KRSC ``weight`` -> ``[N, C_out]`` (bias and ReLU after, in torch)."""
        functional = _import_spconv("spconv.pytorch.functional")
        out = functional.indice_subm_conv(rows, weight, self.pairs, self.pair_num, self.num_rows,
                                          spconv_algo(rows.device))
        out = out if bias is None else out + bias
        return torch.relu(out) if relu else out

    def pair_count(self) -> torch.Tensor:
        """(output, input) neighbour pairs, centre included: a 0-d tensor (read without a wait
        only once the pass is over)."""
        return 2 * self.pair_num.sum(dtype=torch.int64) + self.num_rows

    def copy_(self, other: "NativeRulebook") -> None:
        """Take ``other``'s tables (a rulebook of the same shapes), in place."""
        self.pairs.copy_(other.pairs)
        self.pair_num.copy_(other.pair_num)


class GemmRulebook:
    """A submanifold rulebook of spconv's mask implicit GEMM (CUDA): for every output row, the
    input row at each kernel offset (-1: inactive), bit masks of the active offsets, and the
    rows sorted by mask. Built with the backward tables when gradients are on."""

    def __init__(self, active: "ActiveSet", kernel_size: Tuple[int, int], dilation: Tuple[int, int],
                 train: bool):
        ops = _import_spconv("spconv.pytorch.ops")
        (_, _, self.pair_fwd, self.pair_bwd, self.mask_fwd, self.mask_bwd, self.argsort_fwd, self.argsort_bwd,
         self.masks) = ops.get_indice_pairs_implicit_gemm(
            active.indices, active.batch_size, list(active.spatial_shape), spconv_algo(active.indices.device),
            list(kernel_size), [1, 1], [0, 0], list(dilation), [0, 0], True, False, train)
        self.num_rows = active.num_rows
        self.train = train

    def conv(self, rows: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
             relu: bool) -> torch.Tensor:
        """``rows [N, C_in]``, KRSC ``weight`` -> ``[N, C_out]``; without gradient, bias and
        ReLU in the kernel's epilogue."""
        if self.train and torch.is_grad_enabled() and (rows.requires_grad or weight.requires_grad):
            functional = _import_spconv("spconv.pytorch.functional")
            out = functional.implicit_gemm(rows, weight, self.pair_fwd, self.pair_bwd, self.mask_fwd, self.mask_bwd,
                                           self.argsort_fwd, self.argsort_bwd, self.num_rows, self.masks, True, True)
            out = out if bias is None else out + bias
            return torch.relu(out) if relu else out
        ops = _import_spconv("spconv.pytorch.ops")
        out, _, _ = ops.implicit_gemm(rows, weight, self.pair_fwd, self.mask_fwd, self.argsort_fwd, self.num_rows,
                                      self.masks, False, True, bias=bias, act_type=_activation(relu),
                                      output_dtype=weight.dtype)
        return out

    def pair_count(self) -> torch.Tensor:
        """(output, input) neighbour pairs, centre included: a 0-d tensor (read without a wait
        only once the pass is over)."""
        return (self.pair_fwd >= 0).sum(dtype=torch.int64)

    def copy_(self, other: "GemmRulebook") -> None:
        """Take ``other``'s tables (a rulebook of the same shapes), in place."""
        self.pair_fwd.copy_(other.pair_fwd)
        for mine, theirs in zip((*self.mask_fwd, *self.argsort_fwd), (*other.mask_fwd, *other.argsort_fwd)):
            mine.copy_(theirs)


class ActiveSet:
    """The active pixels of a ``[B, C, h, w]`` feature grid, and what the ops on them share.

    indices:       ``[N, 3]`` int32 (batch, y, x), row-major order (spconv's coordinates).
    flat:          ``[N]`` int64, ``(b * h + y) * w + x``: each row's place in the flattened grid.
    grid_batch:    B; spatial_shape: ``(h, w)``; prefix: the stage's name (``"stage2"``).
    batch_size:    spconv's batch size: B, plus the extra images of a padded set.
    num_pad:       rows of padding at the end (:meth:`padded`; 0 for a set of real pixels).

    Rulebooks (:meth:`rulebook`) and neighbour tables (:meth:`neighbours`) are built once per
    set, on first use, and kept as long as the set lives.
    """

    __slots__ = ("indices", "flat", "grid_batch", "batch_size", "spatial_shape", "prefix", "num_pad", "_rulebooks",
                 "_neighbours")

    def __init__(self, indices: torch.Tensor, flat: torch.Tensor, batch_size: int, spatial_shape: Tuple[int, int],
                 prefix: str, num_pad: int = 0, spconv_batch: Optional[int] = None):
        self.indices = indices
        self.flat = flat
        self.grid_batch = batch_size
        self.batch_size = batch_size if spconv_batch is None else spconv_batch
        self.spatial_shape = spatial_shape
        self.prefix = prefix
        self.num_pad = num_pad
        self._rulebooks: Dict[Tuple, object] = {}
        self._neighbours: Dict[Tuple, torch.Tensor] = {}

    @classmethod
    def from_mask(cls, mask: torch.Tensor, prefix: str) -> "ActiveSet":
        """The True pixels of ``mask [B, h, w]`` (one host sync: their number)."""
        batch, height, width = mask.shape
        where = mask.nonzero()  # [N, 3] int64, pixels in row-major order (the tensor itself is column-major)
        b, y, x = where.unbind(1)
        return cls(where.to(torch.int32).contiguous(), (b * height + y) * width + x, batch, (height, width), prefix)

    @property
    def num_rows(self) -> int:
        return self.indices.shape[0]

    @property
    def positions(self) -> int:
        """Pixels of the full grid, ``B * h * w`` (padding's place: this one, past the end)."""
        return self.grid_batch * self.spatial_shape[0] * self.spatial_shape[1]

    def padded(self, num_rows: int) -> "ActiveSet":
        """This set with rows of padding appended up to ``num_rows``: pixels of extra images
        (batch B, B + 1, ... in raster order), so no padding row is a neighbour of a real one and
        every op computes the real rows exactly as without padding. Their ``flat`` is
        :attr:`positions`: dropped when scattered (:meth:`SparseFeatures.to_dense`). spconv's
        batch size depends on ``num_rows`` only (room for any amount of padding), so that sets
        padded to one size have the same shapes everywhere. No host sync."""
        pad = num_rows - self.num_rows
        if pad < 0:
            raise ValueError(f"cannot pad {self.num_rows} rows to {num_rows}")
        height, width = self.spatial_shape
        j = torch.arange(pad, device=self.indices.device)
        extra = torch.stack([self.grid_batch + j // (height * width), j % (height * width) // width, j % width], 1)
        indices = torch.cat([self.indices, extra.to(torch.int32)])
        flat = torch.cat([self.flat, torch.full_like(j, self.positions)])
        images = self.grid_batch + -(-num_rows // (height * width))  # room for any padding of num_rows rows
        return ActiveSet(indices, flat, self.grid_batch, self.spatial_shape, self.prefix, self.num_pad + pad, images)

    def same_pixels(self, other: "ActiveSet") -> bool:
        """Whether ``other`` holds the same pixels in the same order (compares the indices)."""
        return self.indices.shape == other.indices.shape and bool(torch.equal(self.indices, other.indices))

    def subset(self, mask: torch.Tensor, prefix: str) -> Tuple["ActiveSet", torch.Tensor]:
        """The pixels of this set that are True in ``mask [B, h, w]``, as a new set, and their
        rows in this one (``[M]`` int64). One host sync (their number); with
        :func:`debug_checks` a second, to check that ``mask`` has no pixel outside this set."""
        flat_mask = mask.reshape(-1)
        if self.num_pad:  # padding rows read one False past the end of the grid
            flat_mask = torch.cat([flat_mask, flat_mask.new_zeros(1)])
        keep = flat_mask.index_select(0, self.flat)  # [N] bool
        rows = keep.nonzero().squeeze(1)
        if debug_checks() and rows.shape[0] != int(mask.sum()):
            raise ValueError("restrict: the mask has pixels outside this tensor's active set")
        subset = ActiveSet(self.indices.index_select(0, rows), self.flat.index_select(0, rows), self.grid_batch,
                           self.spatial_shape, prefix)
        return subset, rows

    def rulebook(self, kernel_size: Tuple[int, int], dilation: Tuple[int, int]):
        """The rulebook of this kernel size and dilation (built on first use, with gradient
        tables when gradients are on): :class:`NativeRulebook` on the CPU, :class:`GemmRulebook`
        on CUDA."""
        train = torch.is_grad_enabled()
        key = (kernel_size, dilation, train and self.indices.is_cuda)
        book = self._rulebooks.get(key)
        if book is None:
            if self.indices.is_cuda:
                book = GemmRulebook(self, kernel_size, dilation, train)
            else:
                book = NativeRulebook(self, kernel_size, dilation)
            self._rulebooks[key] = book
        return book

    def rulebooks(self) -> Dict[str, object]:
        """The rulebooks built so far, by :func:`rulebook_key`."""
        return {rulebook_key(self.prefix, kernel, dilation): book
                for (kernel, dilation, _), book in self._rulebooks.items()}

    def neighbours(self, kernel_size: Pair, dilation: Pair = 1) -> torch.Tensor:
        """``[kh * kw, N]`` int64: the row of each row's neighbour at each offset of a
        ``kh x kw`` window dilated by ``dilation``, in raster order (-1: inactive). An odd side
        is centred; an even one is placed as torch's ``padding='same'`` places it (the extra
        offset after: a 2-wide window reads offsets 0 and 1)."""
        (kh, kw), (dh, dw) = _pair(kernel_size), _pair(dilation)
        key = (kh, kw, dh, dw)
        table = self._neighbours.get(key)
        if table is None:
            (top, bottom), (left, right) = rules.same_padding(kh, dh), rules.same_padding(kw, dw)
            height, width = self.spatial_shape
            idx = self.indices.long()
            lookup = idx.new_full((self.batch_size, height + top + bottom, width + left + right), -1)
            lookup[idx[:, 0], idx[:, 1] + top, idx[:, 2] + left] = torch.arange(len(idx), device=idx.device)
            table = torch.stack([lookup[idx[:, 0], idx[:, 1] + dy, idx[:, 2] + dx]
                                 for dy in range(0, top + bottom + 1, dh) for dx in range(0, left + right + 1, dw)])
            self._neighbours[key] = table
        return table

    def neighbours_or_self(self, kernel_size: Pair, dilation: Pair = 1) -> torch.Tensor:
        """:meth:`neighbours` with each inactive neighbour replaced by the row itself (cached):
        what a maximum over the window reads without changing its value."""
        key = ("self", *_pair(kernel_size), *_pair(dilation))
        table = self._neighbours.get(key)
        if table is None:
            table = self.neighbours(kernel_size, dilation)
            table = torch.where(table >= 0, table, torch.arange(table.shape[1], device=table.device))
            self._neighbours[key] = table
        return table

    def pair_count(self, kernel_size: Pair, dilation: Pair = 1) -> torch.Tensor:
        """(row, active neighbour) pairs of a window, centre included, from the neighbour
        table: what a submanifold conv of this window computes (a 0-d tensor, no host sync)."""
        return (self.neighbours(kernel_size, dilation) >= 0).sum(dtype=torch.int64)


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
            weight = _as(conv.weight[:, :, 0, 0], self.rows.dtype)
            bias = None if conv.bias is None else _as(conv.bias, self.rows.dtype)
            out = F.linear(self.rows, weight, bias)
            return SparseFeatures(torch.relu(out) if relu else out, self.active)
        device = self.rows.device.type
        dtype = _spconv_dtype(self.rows)
        rows = _as(self.rows, dtype)
        weight = _krsc_weight(conv.weight, dtype)
        bias = None if conv.bias is None else _as(conv.bias, dtype)
        # under autocast, spconv's own matmuls (the CPU's torch.mm) would change dtype under it
        outside_autocast = torch.autocast(device, enabled=False) if _autocast_dtype(device) else nullcontext()
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
