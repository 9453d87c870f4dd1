"""Wall-clock time per section of a forward pass, for benchmarks.

``LayerCascade.forward`` marks its sections (``stage1``, ``stage2``, ``stage3``,
``assembly``) with :func:`section`. Outside a :class:`SectionTimer` a section costs one list
check; inside, its time is added to the timer (after a CUDA synchronise, so that GPU work is
counted where it happens).
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional

import torch

_ACTIVE: List["SectionTimer"] = []


class SectionTimer:
    """``with SectionTimer() as t: model(x)`` then ``t.seconds["stage2"]``."""

    def __init__(self, device: Optional[torch.device] = None):
        self.sync = device is not None and device.type == "cuda"
        self.seconds: Dict[str, float] = defaultdict(float)

    def __enter__(self) -> "SectionTimer":
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _ACTIVE.remove(self)


@contextmanager
def section(name: str) -> Iterator[None]:
    if not _ACTIVE:
        yield
        return
    timer = _ACTIVE[-1]
    if timer.sync:
        torch.cuda.synchronize()
    start = time.perf_counter()
    try:
        yield
    finally:
        if timer.sync:
            torch.cuda.synchronize()
        timer.seconds[name] += time.perf_counter() - start
