"""spconv's functional level: the only module that imports spconv.

A ``k x k`` conv (k > 1, groups 1) of a sparse stage calls spconv with the rulebook its
:class:`~sparse_lc.ops.active_set.ActiveSet` caches, no ``SparseConvTensor`` and no spconv
module in between:

* on the CPU, spconv's Native algorithm (the only one that runs there, :class:`NativeRulebook`);
  bias and ReLU are applied in torch, after the conv;
* on CUDA, the mask implicit GEMM (:class:`GemmRulebook`); in inference (no gradient) the bias
  and a ReLU that follows the conv run in the kernel's epilogue. spconv fuses a residual add only
  in int8, so adds stay torch adds.

Also here: the dtype spconv computes in (float16/float32, float64 on the CPU; no bfloat16) and the
weight layout it reads (KRSC).
"""
from __future__ import annotations

import importlib
import logging
import warnings
from functools import lru_cache
from types import ModuleType
from typing import TYPE_CHECKING, Optional, Tuple

import torch

if TYPE_CHECKING:
    from spconv.core import ConvAlgo

    from .active_set import ActiveSet

# spconv asks torch.fx whether it is tracing on every conv; torch logs a deprecation note for that.
logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)


@lru_cache(maxsize=None)
def import_spconv(name: str) -> ModuleType:
    """Import an spconv module on first use: loading spconv takes seconds, and only the
    sparse stages need it (``sparse-lc --help``, dense runs and data checks never do)."""
    with warnings.catch_warnings():  # spconv 2.3 still uses the deprecated torch.cuda.amp decorators
        warnings.simplefilter("ignore", FutureWarning)
        return importlib.import_module(name)


def spconv_algo(device: torch.device) -> ConvAlgo:
    """The spconv algorithm for ``device``: Native on CPU (the only one that runs there),
    MaskImplicitGemm on CUDA."""
    algo = import_spconv("spconv.core").ConvAlgo
    return algo.Native if device.type == "cpu" else algo.MaskImplicitGemm



def rulebook_key(prefix: str, kernel_size: Tuple[int, int], dilation: Tuple[int, int]) -> str:
    """The name of a stage's rulebook for one kernel size and dilation (``"stage2/k3x3d2x2"``)."""
    return f"{prefix}/k{kernel_size[0]}x{kernel_size[1]}d{dilation[0]}x{dilation[1]}"


def _activation(relu: bool):
    activation = import_spconv("cumm.tensorview").gemm.Activation
    return activation.ReLU if relu else activation.None_


def krsc_weight(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[out, in, kh, kw]`` (torch) -> ``[out, kh, kw, in]`` (spconv KRSC), contiguous, in ``dtype``.

    A weight in channels_last memory format (as :class:`~sparse_lc.LayerCascade` keeps them) is
    already laid out as KRSC, so this is a free view; any other layout costs one copy. Nothing is
    cached, so an update by any means (optimizer, ``.data``, ``load_state_dict``) is always seen.
    """
    return as_dtype(weight.permute(0, 2, 3, 1), dtype).contiguous()


def as_dtype(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor`` in ``dtype``; itself, without dispatching an op, when it already is."""
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def spconv_dtype(rows: torch.Tensor) -> torch.dtype:
    """The dtype spconv computes ``rows`` in: their own, or under autocast the autocast dtype
    where spconv has kernels for it (float16 on CUDA), else float32. ValueError for a dtype
    spconv has no kernels for (bfloat16, outside autocast)."""
    device = rows.device.type
    wanted = autocast_dtype(device)
    if wanted is not None:
        return wanted if wanted == torch.float16 and device == "cuda" else torch.float32
    supported = (torch.float32, torch.float16) + ((torch.float64,) if device == "cpu" else ())
    if rows.dtype not in supported:
        raise ValueError(f"spconv on {device} runs in {', '.join(str(d)[6:] for d in supported)}, not "
                         f"{str(rows.dtype)[6:]} (it has no bfloat16 kernels; float64 on the CPU only): run the "
                         f"sparse stages in float16 or float32")
    return rows.dtype


def autocast_dtype(device: str) -> Optional[torch.dtype]:
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

    def __init__(self, active: ActiveSet, kernel_size: Tuple[int, int], dilation: Tuple[int, int]):
        ops = import_spconv("spconv.pytorch.ops")
        _, self.pairs, self.pair_num = ops.get_indice_pairs(
            active.indices, active.batch_size, list(active.spatial_shape), spconv_algo(active.indices.device),
            list(kernel_size), [1, 1], [0, 0], list(dilation), [0, 0], True, False)
        self.num_rows = active.num_rows

    def conv(self, rows: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
             relu: bool) -> torch.Tensor:
        """``rows [N, C_in]``, KRSC ``weight`` -> ``[N, C_out]`` (bias and ReLU after, in torch)."""
        functional = import_spconv("spconv.pytorch.functional")
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

    def __init__(self, active: ActiveSet, kernel_size: Tuple[int, int], dilation: Tuple[int, int],
                 train: bool):
        ops = import_spconv("spconv.pytorch.ops")
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
            functional = import_spconv("spconv.pytorch.functional")
            out = functional.implicit_gemm(rows, weight, self.pair_fwd, self.pair_bwd, self.mask_fwd, self.mask_bwd,
                                           self.argsort_fwd, self.argsort_bwd, self.num_rows, self.masks, True, True)
            out = out if bias is None else out + bias
            return torch.relu(out) if relu else out
        ops = import_spconv("spconv.pytorch.ops")
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

