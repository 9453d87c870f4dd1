"""Timing one 3x3 conv layer: sparse (spconv SubMConv2d) against dense, at one setting."""
from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Tuple

import torch
from torch import nn

from sparse_lc.analysis import nested_masks
from sparse_lc.ops import DenseFeatures, MacCounter, SparseFeatures, spconv_algo


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
    gather_ms: float        # dense map -> sparse rows
    scatter_ms: float       # sparse rows -> dense map
    sparse_iqr_ms: float
    dense_iqr_ms: float
    mac_ratio: float        # dense MACs / sparse MACs (active neighbour pairs x C x C)
    speedup: float          # dense_ms / sparse_ms
    speedup_all_in: float   # dense_ms / (gather + rulebook + sparse + scatter)

    def to_json(self) -> Dict:
        return asdict(self)


def _once(fn: Callable[[], object], sync: bool) -> float:
    """Wall time of one call, in milliseconds."""
    if sync:
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if sync:
        torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - start)


def _median_iqr(times: List[float]) -> Tuple[float, float]:
    q = statistics.quantiles(times, n=4) if len(times) > 1 else times * 3
    return statistics.median(times), q[2] - q[0]


def _time(fn: Callable[[], object], warmup: int, reps: int, sync: bool) -> Tuple[float, float]:
    """Median and interquartile range of ``fn``'s wall time, in milliseconds."""
    for _ in range(warmup):
        fn()
    return _median_iqr([_once(fn, sync) for _ in range(reps)])


def _time_with_and_without(full: Callable[[], object], part: Callable[[], object], warmup: int, reps: int,
                           sync: bool) -> Tuple[float, float, float]:
    """``part``'s median and IQR, and the median of ``full - part`` measured in the same
    repetition (paired, so that the difference is not two independent medians' noise)."""
    for _ in range(warmup):
        full(), part()
    pairs = [(_once(full, sync), _once(part, sync)) for _ in range(reps)]
    median, iqr = _median_iqr([p for _, p in pairs])
    return median, iqr, max(statistics.median([f - p for f, p in pairs]), 0.0)


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
    sync = dev.type == "cuda"
    dense_ms, dense_iqr = _time(lambda: conv(x), warmup, reps, sync)
    masked = DenseFeatures(x, mask)
    dense_masked_ms, _ = _time(lambda: masked.conv(conv), warmup, reps, sync)
    gather_ms, _ = _time(lambda: SparseFeatures.from_dense(x, mask, "bench"), warmup, reps, sync)
    rows = SparseFeatures.from_dense(x, mask, "bench")
    with_rulebook = rows.conv(conv)  # builds and caches the rulebook
    # a conv on fresh rows builds the rulebook; on rows that carry one it reuses it
    sparse_ms, sparse_iqr, rulebook_ms = _time_with_and_without(lambda: rows.conv(conv),
                                                                lambda: with_rulebook.conv(conv), warmup, reps, sync)
    scatter_ms, _ = _time(with_rulebook.to_dense, warmup, reps, sync)
    with MacCounter() as dense_macs:
        DenseFeatures(x).conv(conv)
    with MacCounter() as sparse_macs:
        with_rulebook.conv(conv)
    all_in = gather_ms + rulebook_ms + sparse_ms + scatter_ms
    return LayerResult(channels, dilation, share, pattern, spconv_algo(dev).name, dense_ms, dense_masked_ms,
                       sparse_ms, rulebook_ms, gather_ms, scatter_ms, sparse_iqr, dense_iqr,
                       dense_macs.total() / max(sparse_macs.total(), 1), dense_ms / sparse_ms, dense_ms / all_in)
