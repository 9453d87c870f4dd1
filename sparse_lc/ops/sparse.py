"""Sparse feature rows on an spconv ``SparseConvTensor``: the only module that imports spconv.

The hard pixels of a stage become one feature row each (``[N, C]``), with their coordinates in
``indices`` (``[N, 3]`` int32: batch, y, x; batch in column 0, as spconv wants). A 3x3 (or any
odd) conv runs as an spconv ``SubMConv2d``: outputs only at the active pixels, reading only
active neighbours. All convs of one kernel size and dilation in a stage share one rulebook
through spconv's ``indice_key`` (``"{stage}/k{kh}x{kw}d{dh}x{dw}"``), built by the first of them:
all tensors on one active set share one rulebook dict, whatever branch of a block they are in.
1x1 convs, batch norm, ReLU, (scaled) residual adds and channel concatenation act on the rows
directly; the submanifold max pool gathers the rows of active neighbours in pure torch.
"""
from __future__ import annotations

import importlib
import logging
import warnings
from functools import lru_cache
from types import ModuleType
from typing import TYPE_CHECKING, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.timing import section
from . import mac_counter
from .features import batch_norm_rows, check_max_pool, check_submanifold_conv

if TYPE_CHECKING:
    import spconv.pytorch as spconv
    from spconv.core import ConvAlgo

# spconv asks torch.fx whether it is tracing on every conv; torch logs a deprecation note for that.
logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)

__all__ = ["SparseFeatures", "spconv_algo", "rulebook_key"]


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


def rulebook_key(prefix: str, kernel_size: Tuple[int, int], dilation: Tuple[int, int]) -> str:
    """The spconv ``indice_key`` shared by all convs of one stage with this kernel and dilation."""
    return f"{prefix}/k{kernel_size[0]}x{kernel_size[1]}d{dilation[0]}x{dilation[1]}"


@lru_cache(maxsize=None)
def _subm_executor(in_channels: int, out_channels: int, kernel_size: Tuple[int, int],
                   dilation: Tuple[int, int], indice_key: str, algo: ConvAlgo) -> spconv.SubMConv2d:
    """An spconv ``SubMConv2d`` used only for its machinery (rulebook build and reuse, algorithm
    dispatch). Its own weight is deleted: the canonical weight of the ``nn.Conv2d`` is passed in."""
    spconv = _import_spconv("spconv.pytorch")
    layer = spconv.SubMConv2d(in_channels, out_channels, kernel_size, dilation=dilation,
                              bias=False, indice_key=indice_key, algo=algo)
    del layer.weight
    return layer


def _krsc_weight(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[out, in, kh, kw]`` (torch) -> ``[out, kh, kw, in]`` (spconv KRSC), contiguous, in ``dtype``.

    A weight in channels_last memory format (as :class:`~sparse_lc.LayerCascade` keeps them) is
    already laid out as KRSC, so this is a free view; any other layout costs one copy. Nothing is
    cached, so an update by any means (optimizer, ``.data``, ``load_state_dict``) is always seen.
    """
    return weight.permute(0, 2, 3, 1).to(dtype).contiguous()


def _check_dtype(rows: torch.Tensor) -> None:
    supported = (torch.float32, torch.float64) if rows.device.type == "cpu" else (torch.float32, torch.float16)
    if rows.dtype not in supported:
        raise ValueError(f"spconv on {rows.device.type} runs in {[str(d) for d in supported]}, "
                         f"not {rows.dtype} (under autocast, leave the sparse stages in float32)")


class SparseFeatures:
    """Feature rows ``[N, C]`` of the active pixels of a ``[B, C, H, W]`` map.

    ``prefix`` names the stage; it scopes the rulebooks cached in the tensor's ``indice_dict``.
    """

    def __init__(self, tensor: spconv.SparseConvTensor, prefix: str):
        self.tensor = tensor
        self.prefix = prefix

    # ----------------------------------------------------------------- construction / export
    @classmethod
    def from_dense(cls, dense: torch.Tensor, mask: torch.Tensor, prefix: str) -> "SparseFeatures":
        """Gather the rows of ``dense [B, C, H, W]`` where ``mask [B, H, W]`` is True.

        Rows come in row-major (batch, y, x) order. ``mask`` must have at least one True pixel
        (spconv cannot run on zero active sites; the cascade skips such stages).
        """
        batch, _, height, width = dense.shape
        indices = mask.nonzero().to(torch.int32).contiguous()  # nonzero() is column-major: copy
        rows = dense.permute(0, 2, 3, 1)[mask]  # [N, C]
        spconv = _import_spconv("spconv.pytorch")
        return cls(spconv.SparseConvTensor(rows.contiguous(), indices, [height, width], batch), prefix)

    def restrict(self, mask: torch.Tensor, prefix: str) -> "SparseFeatures":
        """The rows whose pixel is True in ``mask [B, H, W]``, as a new tensor for a new stage.

        ``mask`` must be a subset of this tensor's active set (the next stage's pixels are a
        subset of this stage's). Rulebooks are not carried over: the next stage builds its own.
        """
        idx = self.tensor.indices.long()
        keep = mask[idx[:, 0], idx[:, 1], idx[:, 2]]
        if int(keep.sum()) != int(mask.sum()):
            raise ValueError("restrict: the mask has pixels outside this tensor's active set")
        t = self.tensor
        spconv = _import_spconv("spconv.pytorch")
        return SparseFeatures(spconv.SparseConvTensor(self.rows[keep], t.indices[keep].contiguous(),
                                                      t.spatial_shape, t.batch_size), prefix)

    def to_dense(self) -> torch.Tensor:
        """Scatter the rows into a ``[B, C, H, W]`` map that is zero outside the active set."""
        t = self.tensor
        idx = t.indices.long()
        out = self.rows.new_zeros(t.batch_size, *t.spatial_shape, self.num_channels)
        out = out.index_put((idx[:, 0], idx[:, 1], idx[:, 2]), self.rows)
        return out.permute(0, 3, 1, 2)

    # ----------------------------------------------------------------------------- accessors
    @property
    def rows(self) -> torch.Tensor:
        return self.tensor.features

    @property
    def num_channels(self) -> int:
        return self.rows.shape[1]

    @property
    def num_active(self) -> int:
        return self.rows.shape[0]

    def rulebooks(self) -> Dict[str, object]:
        """The rulebooks (spconv ``IndiceData``) built so far, by ``indice_key``."""
        return dict(self.tensor.indice_dict)

    def _record(self, module: nn.Module, kind: str, work: int) -> None:
        if mac_counter.counting():
            height, width = self.tensor.spatial_shape
            mac_counter.record(module, kind, work, self.num_active, self.tensor.batch_size * height * width)

    def _with_rows(self, rows: torch.Tensor) -> "SparseFeatures":
        return SparseFeatures(self.tensor.replace_feature(rows), self.prefix)

    # --------------------------------------------------------------------------- block ops
    def conv(self, conv: nn.Conv2d) -> "SparseFeatures":
        check_submanifold_conv(conv)
        if conv.kernel_size == (1, 1):
            self._record(conv, "conv", self.num_active * conv.in_channels * conv.out_channels)
            weight = conv.weight[:, :, 0, 0].to(self.rows.dtype)
            bias = None if conv.bias is None else conv.bias.to(self.rows.dtype)
            return self._with_rows(F.linear(self.rows, weight, bias))
        _check_dtype(self.rows)
        algo = spconv_algo(self.rows.device)
        key = rulebook_key(self.prefix, conv.kernel_size, conv.dilation)
        executor = _subm_executor(conv.in_channels, conv.out_channels, conv.kernel_size,
                                  conv.dilation, key, algo)
        # spconv cannot add a bias on the CPU: the bias is added here, on the rows.
        weight = _krsc_weight(conv.weight, self.rows.dtype)
        with section("spconv"):  # benchmarks split a stage's time into spconv's and ours
            out = executor._conv_forward(torch.is_grad_enabled(), self.tensor, weight, None)
        # spconv gives its output a copy of the rulebook dict; keep the one dict of this active
        # set instead, so that a rulebook built in one branch of a block serves all the others
        self.tensor.indice_dict[key] = out.indice_dict[key]
        out.indice_dict = self.tensor.indice_dict
        result = SparseFeatures(out, self.prefix)
        if mac_counter.counting():
            self._record(conv, "conv", _pairs(out.indice_dict[key]) * conv.in_channels * conv.out_channels)
        return result if conv.bias is None else result._with_rows(result.rows + conv.bias.to(result.rows.dtype))

    def norm(self, bn: nn.modules.batchnorm._BatchNorm) -> "SparseFeatures":
        if isinstance(bn, nn.Identity):  # folded into the conv before it (see layers.fuse)
            return self
        self._record(bn, "norm", self.num_active * self.num_channels)
        return self._with_rows(batch_norm_rows(bn, self.rows))

    def relu(self) -> "SparseFeatures":
        return self._with_rows(torch.relu(self.rows))

    def add(self, other: "SparseFeatures", alpha: float = 1.0) -> "SparseFeatures":
        self._check_same_active_set("add", [other])
        return self._with_rows(torch.add(self.rows, other.rows, alpha=alpha))

    def cat(self, others: Sequence["SparseFeatures"]) -> "SparseFeatures":
        self._check_same_active_set("cat", others)
        return self._with_rows(torch.cat([self.rows, *(o.rows for o in others)], dim=1))

    def max_pool(self, kernel_size: int, dilation: int = 1) -> "SparseFeatures":
        """Max over the active pixels of each window (see :class:`~sparse_lc.ops.Features`).

        The window's neighbours are looked up in a ``[B, H + 2p, W + 2p]`` map of row numbers
        (-1: inactive), in raster order. Without gradient, an inactive neighbour is read as the
        centre (always active, so the maximum is unchanged) and the maximum is taken offset by
        offset, in place: no ``[N, k * k, C]`` buffer. With gradient, the winning row of each
        channel is chosen without gradient, scanning in raster order with a strict ``>``
        (``F.max_pool2d``'s tie rule; an inactive neighbour reads a row of -inf), then gathered
        with gradient, so gradients equal the dense path's.
        """
        padding = check_max_pool(kernel_size, dilation)
        t, rows = self.tensor, self.rows
        idx = t.indices.long()
        height, width = t.spatial_shape
        lookup = idx.new_full((t.batch_size, height + 2 * padding, width + 2 * padding), -1)
        lookup[idx[:, 0], idx[:, 1] + padding, idx[:, 2] + padding] = torch.arange(len(idx), device=idx.device)
        offsets = [(dy, dx) for dy in range(0, 2 * padding + 1, dilation) for dx in range(0, 2 * padding + 1, dilation)]
        neighbours = [lookup[idx[:, 0], idx[:, 1] + dy, idx[:, 2] + dx] for dy, dx in offsets]  # k * k of [N]
        if not (torch.is_grad_enabled() and rows.requires_grad):
            centre = torch.arange(len(idx), device=idx.device)
            best = None
            for neighbour in neighbours:
                values = rows.index_select(0, torch.where(neighbour >= 0, neighbour, centre))
                best = values if best is None else torch.maximum(best, values, out=best)
            return self._with_rows(best)
        with torch.no_grad():
            padded = torch.cat([rows, rows.new_full((1, rows.shape[1]), float("-inf"))])  # -1 reads the last row
            best, winner = padded.new_full(rows.shape, float("-inf")), idx.new_zeros(rows.shape)
            for neighbour in neighbours:
                values = padded.index_select(0, neighbour.remainder(len(padded)))  # [N, C]
                better = values > best
                best = torch.where(better, values, best)
                winner = torch.where(better, neighbour[:, None], winner)
        return self._with_rows(rows.gather(0, winner))

    def _check_same_active_set(self, op: str, others: Sequence["SparseFeatures"]) -> None:
        t = self.tensor
        for other in others:
            if other.tensor.indices is not t.indices and not torch.equal(other.tensor.indices, t.indices):
                raise ValueError(f"{op}: the sparse tensors have different active sets")


def _pairs(rulebook) -> int:
    """(output, input) neighbour pairs of a submanifold rulebook, centre included.

    A Native rulebook (CPU) stores only half of the non-centre offsets (each symmetric pair
    serves both ways) and leaves the centre out (a plain matmul over all rows); this undoes
    both. An implicit-GEMM rulebook (CUDA) lists every offset of every output, -1 where the
    neighbour is inactive.
    """
    if hasattr(rulebook, "indice_pair_num"):
        return 2 * int(rulebook.indice_pair_num.sum()) + int(rulebook.indices.shape[0])
    return int((rulebook.pair_fwd >= 0).sum())


def pair_counts(features: SparseFeatures) -> List[Tuple[str, int]]:
    """``(indice_key, pairs)`` for each rulebook built so far on ``features``."""
    return [(key, _pairs(data)) for key, data in features.rulebooks().items()]
