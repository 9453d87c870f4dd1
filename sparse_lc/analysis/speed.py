"""End-to-end speed of the cascade against the same model run dense (``sparse-lc bench``).

Method (timm's benchmark.py habits): a fixed thread count, warm-up runs, then repetitions in
which the sparse and the dense run alternate, so both see the same machine load (each timed
pass right after an untimed one of the same kind, so neither inherits the other's cache and
allocator state); medians with the interquartile range. Per section of the forward pass
(stage 1, stage 2, stage 3, assembly; together the whole pass) the time comes from
:mod:`sparse_lc.utils.timing`: clock reads on the CPU, CUDA events on a GPU, with nothing that
waits for the device inside a timed pass. The time inside spconv's convolutions is measured in
separate passes. The dense run is the same model with every stage
and head on every pixel (rho = 1, plain dense convolutions). Hard pixels come either from the
model's confidences at ``rho`` or, to measure speed independently of training, from clustered
synthetic masks with exact shares (``hard_shares``; the cascade then skips computing its two
confidence maps, a softmax over each map, which the dense run still does: a small bias in
the cascade's favour). ``ideal_speedup`` is the MAC ratio of the whole model; ``stage23``
compares the time and MAC ratios of stages 2-3 alone, overheads included (building the sparse
tensor and rulebooks, gather, scatter).
"""
from __future__ import annotations

import ctypes
import re
import statistics
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..assembly import grid_size
from ..cascade import LayerCascade
from ..rho import Rho, format_rho
from ..utils import SectionTimer, eval_mode
from .macs import profile_macs
from .mask_patterns import nested_masks

SECTIONS = ("stage1", "stage2", "stage3", "assembly")
SPCONV = "spconv"  # time inside spconv's SubMConv2d calls (nested in stage2 / stage3)
MEMORY_SAMPLES = 3  # peak memory is the median of this many measurements per kind


@dataclass
class StageTime:
    name: str
    dense_s: float
    sparse_s: float
    active_fraction: float


@dataclass
class BenchReport:
    setting: str                 # "rho=0.9" or "hard_share=0.2/0.1"
    size: Tuple[int, int]
    batch: int
    threads: int
    dense_s: float               # median seconds per forward pass
    sparse_s: float
    dense_iqr_s: float           # interquartile range of those times
    sparse_iqr_s: float
    speedup: float               # dense_s / sparse_s
    ideal_speedup: float         # dense MACs / cascade MACs, whole model
    images_per_s_dense: float
    images_per_s_sparse: float
    stages: List[StageTime]
    stage23: Dict[str, float]    # stages 2-3 alone: dense_s, sparse_s, speedup, mac_ratio, efficiency,
                                 # spconv_s (the time inside spconv's convolutions, from separate passes)
    peak_mem_dense: int          # bytes above the model's resting memory (RSS on CPU, allocated on
                                 # CUDA), median of MEMORY_SAMPLES measurements
    peak_mem_sparse: int

    def to_json(self) -> Dict:
        return asdict(self)


def _median_iqr(values: Sequence[float]) -> Tuple[float, float]:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return statistics.median(values), q[2] - q[0]


def _rss_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def peak_rss() -> int:
    """The process's peak resident memory in bytes (Linux ``VmHWM``: since it started, or since
    :func:`peak_memory` last reset it)."""
    return _rss_kib("VmHWM") * 1024


def _release_free_memory() -> None:
    """Hand memory freed by earlier runs back to the OS (glibc), so RSS measures this run."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_memory(run: Callable[[], object], device: torch.device) -> int:
    """Bytes by which ``run()`` raises peak memory above the current level: max allocated on
    CUDA; on the CPU the process's peak RSS (Linux: freed memory is first returned to the OS,
    then the peak is reset through ``/proc/self/clear_refs``)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(device) - before
    _release_free_memory()
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")  # reset the peak (VmHWM) to the current resident size
    before = _rss_kib("VmRSS")
    run()
    return peak_rss() - before * 1024


def _timed(run: Callable[[], object], device: torch.device, names: Sequence[str]) -> SectionTimer:
    """One pass of ``run`` from an idle device, timed per section of ``names`` (no synchronise
    inside the pass: see :mod:`sparse_lc.utils.timing`)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    with SectionTimer(device, names) as timer:
        run()
    return timer


@torch.no_grad()
def bench(model: LayerCascade, size: Tuple[int, int], rho: Optional[Rho] = None,
          hard_shares: Optional[Tuple[float, float]] = None, batch: int = 1, warmup: int = 2,
          reps: int = 7, seed: int = 0) -> BenchReport:
    """Time ``model`` (in eval mode; fuse it first for inference speed) on a random
    normalised batch of ``size``, sparse at ``rho`` or with clustered masks of ``hard_shares``
    (h2, h3), against the dense run."""
    with eval_mode(model):
        return _bench(model, size, rho, hard_shares, batch, warmup, reps, seed)


def _bench(model: LayerCascade, size: Tuple[int, int], rho: Optional[Rho], hard_shares: Optional[Tuple[float, float]],
           batch: int, warmup: int, reps: int, seed: int) -> BenchReport:
    param = next(model.parameters())
    images = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed)).to(param.device, param.dtype)
    kwargs: Dict[str, object] = {"rho": rho}
    setting = f"rho={format_rho(rho if rho is not None else model.rho)}"
    if hard_shares is not None:
        grid = (batch, *grid_size(*size))
        masks = nested_masks(grid, hard_shares, "clustered", seed)
        kwargs = {"hard_masks": tuple(m.to(param.device) for m in masks)}
        setting = f"hard_share={hard_shares[0]:g}/{hard_shares[1]:g}"
    runs = {"sparse": lambda: model(images, execution="sparse", **kwargs),
            "dense": lambda: model(images, rho=1.0, execution="dense")}
    for _ in range(warmup):
        for run in runs.values():
            run()
    totals: Dict[str, List[float]] = {"sparse": [], "dense": []}
    sections: Dict[str, Dict[str, List[float]]] = {k: {s: [] for s in SECTIONS} for k in runs}
    order = list(runs)
    for rep in range(reps):
        for kind in order[rep % 2:] + order[:rep % 2]:  # alternate which kind goes first
            run = runs[kind]
            run()  # untimed: the timed pass follows one of its own kind, not the other (caches, allocator)
            timer = _timed(run, param.device, SECTIONS)
            totals[kind].append(timer.total)
            for s in SECTIONS:
                sections[kind][s].append(timer.seconds[s])
    # the time inside spconv, in passes of its own: its many boundaries would weigh on the timed ones
    spconv_s = statistics.median(_timed(runs["sparse"], param.device, (SPCONV,)).seconds[SPCONV] for _ in range(reps))
    macs = profile_macs(model, [images], **kwargs)
    sparse_s, sparse_iqr = _median_iqr(totals["sparse"])
    dense_s, dense_iqr = _median_iqr(totals["dense"])
    active = {s.name: s.active_fraction for s in macs.stages}
    stages = [StageTime(s, statistics.median(sections["dense"][s]), statistics.median(sections["sparse"][s]),
                        active.get(s, 1.0)) for s in SECTIONS]
    later = [m for m in macs.stages if m.name in ("stage2", "stage3")]
    d23, s23 = stages[1].dense_s + stages[2].dense_s, stages[1].sparse_s + stages[2].sparse_s
    sparse23 = sum(m.sparse_macs for m in later)
    mac_ratio = sum(m.dense_macs for m in later) / sparse23 if sparse23 else None  # None: no hard pixel
    stage23 = {"dense_s": d23, "sparse_s": s23, "speedup": d23 / s23, "mac_ratio": mac_ratio,
               "efficiency": (d23 / s23) / mac_ratio if mac_ratio else None,
               "spconv_s": spconv_s}
    memory = {kind: statistics.median([peak_memory(run, param.device) for _ in range(MEMORY_SAMPLES)])
              for kind, run in runs.items()}
    return BenchReport(setting, tuple(size), batch, torch.get_num_threads(), dense_s, sparse_s, dense_iqr,
                       sparse_iqr, dense_s / sparse_s, macs.ratio, batch / dense_s, batch / sparse_s, stages,
                       stage23, int(memory["dense"]), int(memory["sparse"]))
