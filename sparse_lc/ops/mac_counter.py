"""Counting the multiply-accumulates (MACs) the feature containers really perform.

Inside ``with MacCounter(model) as counter:`` every conv and batch norm run through a feature
container is recorded with the work it did:

* a dense conv: ``B * H_out * W_out * C_out * C_in / groups * kh * kw`` (the full map);
* a submanifold sparse conv: ``pairs * C_in * C_out``, where ``pairs`` counts every (active
  output pixel, active input neighbour) pair of the rulebook, centre included;
* a 1x1 conv on sparse rows: ``N * C_in * C_out``;
* a batch norm: one multiply-add per element it normalises.

Biases are not counted (as ``torch.utils.flop_counter`` does not count them in convs).
Outside a counter, recording costs nothing. A sparse conv's pair count lives on the device:
it is recorded as a tensor and read when the counter is first read, all counts in one transfer,
so counting does not make the host wait for the device inside a forward pass.
"""
from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import nn

_ACTIVE: List["MacCounter"] = []

Window = Tuple[Tuple[int, int], Tuple[int, int]]  # (kernel size, dilation) of a submanifold conv


class MacSource(NamedTuple):
    """How a record's work follows from the pixels it ran on, so that the same layers on other
    pixels can be counted without running them (a CUDA graph's replay runs no Python):
    ``coefficient`` times the active rows (``window`` None) or times the (row, active neighbour)
    pairs of ``window``; ``coefficient`` None: the work is fixed (a dense layer)."""

    module: nn.Module
    coefficient: Optional[int] = None
    window: Optional[Window] = None


@dataclass
class MacRecord:
    name: str        # module name in the model ("backbone.layer3.0.conv1"), or its class
    kind: str        # "conv" or "norm"
    macs: int        # multiply-accumulates performed (a 0-d tensor until the counter is read)
    active: int      # output positions computed (pixels x batch)
    positions: int   # output positions of the full map
    source: Optional[MacSource] = field(default=None, repr=False, compare=False)


class MacCounter:
    """Context manager collecting :class:`MacRecord` s; ``model`` gives the layers their names."""

    def __init__(self, model: Optional[nn.Module] = None):
        self._names: Dict[int, str] = {id(m): n for n, m in model.named_modules()} if model else {}
        self.records: List[MacRecord] = []

    def __enter__(self) -> "MacCounter":
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _ACTIVE.remove(self)

    def add(self, module: nn.Module, kind: str, macs: Union[int, torch.Tensor], active: int, positions: int,
            source: Optional[MacSource] = None) -> None:
        name = self._names.get(id(module), type(module).__name__)
        macs = macs if isinstance(macs, torch.Tensor) else int(macs)
        self.records.append(MacRecord(name, kind, macs, int(active), int(positions), source or MacSource(module)))

    def resolved(self) -> List[MacRecord]:
        """The records with every count a Python int (device counts read in one transfer)."""
        pending = [i for i, r in enumerate(self.records) if isinstance(r.macs, torch.Tensor)]
        if pending:
            values = torch.stack([self.records[i].macs.reshape(()).long() for i in pending]).tolist()
            for i, value in zip(pending, values):
                self.records[i].macs = value
        return self.records

    def total(self, kind: Optional[str] = None) -> int:
        """All MACs recorded, or those of one ``kind``."""
        return sum(r.macs for r in self.resolved() if kind is None or r.kind == kind)

    def by_layer(self) -> "OrderedDict[str, MacRecord]":
        """Records summed per layer name, in first-run order."""
        layers: "OrderedDict[str, MacRecord]" = OrderedDict()
        for r in self.resolved():
            if r.name in layers:
                s = layers[r.name]
                layers[r.name] = MacRecord(r.name, r.kind, s.macs + r.macs, s.active + r.active,
                                           s.positions + r.positions)
            else:
                layers[r.name] = r
        return layers


@contextmanager
def paused() -> Iterator[None]:
    """Inside, nothing is recorded by the counters of the enclosing code (passes that only set
    something up, such as a CUDA graph's warm-up, do not count as work); counters opened inside
    work as usual."""
    outer = _ACTIVE[:]
    _ACTIVE.clear()
    try:
        yield
    finally:
        _ACTIVE[:] = outer


def counting() -> bool:
    """True inside a :class:`MacCounter` (containers skip the bookkeeping otherwise)."""
    return bool(_ACTIVE)


def record(module: nn.Module, kind: str, macs: Union[int, torch.Tensor], active: int, positions: int,
           source: Optional[MacSource] = None) -> None:
    """Called by the feature containers for each conv and norm they run."""
    for counter in _ACTIVE:
        counter.add(module, kind, macs, active, positions, source)


def replay(records: Sequence[MacRecord], rows: int, pairs: Callable[[Window], torch.Tensor]) -> None:
    """Record ``records`` again, counted anew from their sources: a pass of the same layers on
    ``rows`` active rows whose windows have ``pairs(window)`` pairs (fixed work as it was)."""
    for r in records:
        module, coefficient, window = r.source
        if coefficient is None:
            record(module, r.kind, r.macs, r.active, r.positions, r.source)
        else:
            count = rows if window is None else pairs(window)
            record(module, r.kind, coefficient * count, rows, r.positions, r.source)
