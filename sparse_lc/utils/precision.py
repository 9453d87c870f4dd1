"""Numeric precision of a run (float32, float16, bfloat16) and TF32 on CUDA.

* ``fp32``: everything in float32.
* ``fp16``: weights and activations in float16, both paths. On CUDA spconv's implicit GEMM
  accumulates in float32 and cuDNN likewise; on the CPU it runs, but slower than float32 (no fast
  half-precision CPU kernels): it is there for GPUs. Confidences are scored and logits
  interpolated in float32 whatever the precision.
* ``bf16``: the dense path only. spconv has no bfloat16 kernels (its tensor conversion knows
  float32, float64 and float16), so the sparse stages cannot run in it.

TF32: torch lets cuDNN run float32 convolutions in TF32 by default (10-bit mantissa), and spconv
never does, so with torch's defaults the dense path's float32 convs round differently from the
sparse path's. :func:`tf32_disabled` turns TF32 off for a comparison of the two.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator

import torch

PRECISIONS: Dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def precision_dtype(precision: str, execution: str = "sparse") -> torch.dtype:
    """The dtype of ``precision`` (``fp32``, ``fp16``, ``bf16``) for a run of ``execution``;
    ValueError (one line) when that run cannot use it."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype == torch.bfloat16 and execution == "sparse":
        raise ValueError("spconv has no bfloat16 kernels, so the sparse stages cannot run in bf16: use fp16 "
                         "(CUDA) or fp32, or run the dense model alone in bf16")
    return dtype


@contextmanager
def tf32_disabled() -> Iterator[None]:
    """Inside: CUDA matmuls and cuDNN convolutions in full float32 (no TF32), as spconv computes;
    torch's settings are put back on leaving."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def tf32_enabled() -> bool:
    """Whether torch's current settings let CUDA float32 convolutions or matmuls use TF32."""
    return bool(torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)
