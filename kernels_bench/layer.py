"""Timing one 3x3 conv layer: sparse (spconv SubMConv2d) against dense, at one setting.

Times come from :class:`sparse_lc.utils.SectionTimer`: clock reads on the CPU, CUDA events on
a GPU (the device is waited for before and after each timed call, never inside it). What one
sparse conv dispatches is counted with the profiler: aten ops from Python and, on CUDA, kernel
launches (``sparse_lc.analysis.dispatch.count_ops``).
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from sparse_lc.analysis import nested_masks
from sparse_lc.analysis.dispatch import count_ops
from sparse_lc.ops import ActiveSet, DenseFeatures, MacCounter, SparseFeatures, spconv_algo
from sparse_lc.utils import SectionTimer


@dataclass
class LayerResult:
    channels: int
    dilation: int
    share: float            # active share h of the map
    pattern: str            # clustered | scattered
    algo: str               # spconv algorithm (Native on CPU)
    dense_ms: float         # nn.Conv2d on the full map
    dense_masked_ms: float  # the same, then masked (the dense reference of a submanifold conv)
    sparse_ms: float        # SubMConv2d, rulebook already built (reused, as in a stage)
    rulebook_ms: float      # building the rulebook (first conv of a stage)
    gather_ms: float        # dense map -> sparse rows (finding the active pixels included)
    scatter_ms: float       # sparse rows -> dense map
    sparse_iqr_ms: float
    dense_iqr_ms: float
    mac_ratio: float        # dense MACs / sparse MACs (active neighbour pairs x C x C)
    speedup: float          # dense_ms / sparse_ms
    speedup_all_in: float   # dense_ms / (gather + rulebook + sparse + scatter)
    sparse_aten_ops: int    # aten ops one sparse conv dispatches from Python (spconv's own included)
    sparse_launches: Optional[int]  # CUDA kernels one sparse conv launches (None on the CPU)
    dense_launches: Optional[int]   # CUDA kernels the dense conv launches

    def to_json(self) -> Dict:
        return asdict(self)


def _once(fn: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of one call, from an idle device to its end."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    with SectionTimer(device, names=()) as timer:
        fn()
    return 1e3 * timer.total


def _median_iqr(times: List[float]) -> Tuple[float, float]:
    q = statistics.quantiles(times, n=4) if len(times) > 1 else times * 3
    return statistics.median(times), q[2] - q[0]


def _time(fn: Callable[[], object], warmup: int, reps: int, device: torch.device) -> Tuple[float, float]:
    """Median and interquartile range of ``fn``'s time, in milliseconds."""
    for _ in range(warmup):
        fn()
    return _median_iqr([_once(fn, device) for _ in range(reps)])


@torch.no_grad()
def bench_layer(channels: int, dilation: int, share: float, pattern: str, size: Tuple[int, int] = (64, 64),
                device: str = "cpu", warmup: int = 2, reps: int = 7, seed: int = 0) -> LayerResult:
    """One setting: a ``channels -> channels`` 3x3 conv with ``dilation`` on a ``size`` map."""
    dev = torch.device(device)
    torch.manual_seed(seed)
    conv = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False).to(dev)
    conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)
    x = torch.randn(1, channels, *size, device=dev).contiguous(memory_format=torch.channels_last)
    (mask,) = nested_masks((1, *size), (share,), pattern, seed)
    mask = mask.to(dev)
    dense_ms, dense_iqr = _time(lambda: conv(x), warmup, reps, dev)
    masked = DenseFeatures(x, mask)
    dense_masked_ms, _ = _time(lambda: masked.conv(conv), warmup, reps, dev)
    gather_ms, _ = _time(lambda: SparseFeatures.from_dense(x, mask, "bench"), warmup, reps, dev)
    features = SparseFeatures.from_dense(x, mask, "bench")
    active = features.active
    kernel = (conv.kernel_size, conv.dilation)
    # a set with an empty cache builds the rulebook; the features' own set reuses it
    rulebook_ms, _ = _time(lambda: ActiveSet(active.indices, active.flat, active.batch_size, active.spatial_shape,
                                             "fresh").rulebook(*kernel), warmup, reps, dev)
    features.conv(conv)  # builds and caches the rulebook
    sparse_ms, sparse_iqr = _time(lambda: features.conv(conv), warmup, reps, dev)
    scatter_ms, _ = _time(features.to_dense, warmup, reps, dev)
    with MacCounter() as dense_macs:
        DenseFeatures(x).conv(conv)
    with MacCounter() as sparse_macs:
        features.conv(conv)
    cuda = dev.type == "cuda"
    sparse_ops, dense_ops = count_ops(lambda: features.conv(conv), cuda), count_ops(lambda: conv(x), cuda)
    all_in = gather_ms + rulebook_ms + sparse_ms + scatter_ms
    return LayerResult(channels, dilation, share, pattern, spconv_algo(dev).name, dense_ms, dense_masked_ms,
                       sparse_ms, rulebook_ms, gather_ms, scatter_ms, sparse_iqr, dense_iqr,
                       dense_macs.total() / max(sparse_macs.total(), 1), dense_ms / sparse_ms, dense_ms / all_in,
                       sparse_ops.aten_ops, sparse_ops.kernel_launches, dense_ops.kernel_launches)
