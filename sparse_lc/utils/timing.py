"""Time per section of a forward pass, for benchmarks, without disturbing what is timed.

``LayerCascade.forward`` marks its sections (``stage1``, ``stage2``, ``stage3``, ``assembly``;
together they cover the whole pass) with :func:`section`, and the sparse path marks each call
into spconv (``spconv``, nested in ``stage2`` / ``stage3``). Outside a :class:`SectionTimer` a
section costs one list check. Inside one, only the sections the timer asks for are timed:

* on the CPU with ``time.perf_counter`` at the section's boundaries;
* on CUDA with CUDA events recorded on the current stream at the boundaries. Recording an event
  does not wait for the device, so nothing synchronises inside the timed pass: the timer
  synchronises once, when it closes, and then reads the events' elapsed times. The times are
  GPU times between the boundaries, idle gaps included (a launch-bound section shows as long).

Time a nested section (``spconv``) in a pass of its own: each of its boundaries adds an event
record (CUDA) or a clock read to the pass it times.
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Collection, Dict, Iterator, List, Optional, Tuple

import torch

_ACTIVE: List["SectionTimer"] = []


class SectionTimer:
    """``with SectionTimer(device) as t: model(x)``, then ``t.seconds["stage2"]`` and ``t.total``
    (seconds from entering to leaving the ``with`` block).

    ``names``: the sections to time (default: every section met). On CUDA the device is
    synchronised once, on leaving; the caller synchronises before entering when it wants the
    total to start from an idle device (a latency).
    """

    def __init__(self, device: Optional[torch.device] = None, names: Optional[Collection[str]] = None):
        self.cuda = device is not None and torch.device(device).type == "cuda"
        self.names = None if names is None else frozenset(names)
        self.seconds: Dict[str, float] = defaultdict(float)
        self.total = 0.0
        self._marks: List[Tuple[str, object, object]] = []  # (name, start, end) before they are read
        self._start: object = None

    def clock(self) -> object:
        """A mark of now: a clock reading (CPU), or an event recorded on the current stream (CUDA)."""
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def times(self, name: str) -> bool:
        return self.names is None or name in self.names

    def mark(self, name: str, start: object, end: object) -> None:
        self._marks.append((name, start, end))

    def __enter__(self) -> "SectionTimer":
        _ACTIVE.append(self)
        self._start = self.clock()
        return self

    def __exit__(self, *exc) -> None:
        end = self.clock()
        _ACTIVE.remove(self)
        if self.cuda:
            torch.cuda.synchronize()
        self.total += _elapsed(self._start, end)
        for name, start, stop in self._marks:
            self.seconds[name] += _elapsed(start, stop)
        self._marks.clear()


def _elapsed(start: object, end: object) -> float:
    """Seconds between two marks: clock readings, or recorded (and completed) CUDA events."""
    if isinstance(start, float):
        return end - start
    return start.elapsed_time(end) / 1e3  # milliseconds


@contextmanager
def section(name: str) -> Iterator[None]:
    if not _ACTIVE or not _ACTIVE[-1].times(name):
        yield
        return
    timer = _ACTIVE[-1]
    start = timer.clock()
    try:
        yield
    finally:
        timer.mark(name, start, timer.clock())
