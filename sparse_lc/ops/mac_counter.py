"""Counting the multiply-accumulates (MACs) the feature containers really perform.

Inside ``with MacCounter(model) as counter:`` every conv and batch norm run through a feature
container is recorded with the work it did:

* a dense conv: ``B * H_out * W_out * C_out * C_in / groups * kh * kw`` (the full map);
* a submanifold sparse conv: ``pairs * C_in * C_out``, where ``pairs`` counts every (active
  output pixel, active input neighbour) pair of the rulebook, centre included;
* a 1x1 conv on sparse rows: ``N * C_in * C_out``;
* a batch norm: one multiply-add per element it normalises.

Biases are not counted (as ``torch.utils.flop_counter`` does not count them in convs).
Outside a counter, recording costs nothing.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional

from torch import nn

_ACTIVE: List["MacCounter"] = []


@dataclass
class MacRecord:
    name: str        # module name in the model ("backbone.layer3.0.conv1"), or its class
    kind: str        # "conv" or "norm"
    macs: int        # multiply-accumulates performed
    active: int      # output positions computed (pixels x batch)
    positions: int   # output positions of the full map


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

    def add(self, module: nn.Module, kind: str, macs: int, active: int, positions: int) -> None:
        name = self._names.get(id(module), type(module).__name__)
        self.records.append(MacRecord(name, kind, int(macs), int(active), int(positions)))

    def total(self, kind: Optional[str] = None) -> int:
        """All MACs recorded, or those of one ``kind``."""
        return sum(r.macs for r in self.records if kind is None or r.kind == kind)

    def by_layer(self) -> "OrderedDict[str, MacRecord]":
        """Records summed per layer name, in first-run order."""
        layers: "OrderedDict[str, MacRecord]" = OrderedDict()
        for r in self.records:
            if r.name in layers:
                s = layers[r.name]
                layers[r.name] = MacRecord(r.name, r.kind, s.macs + r.macs, s.active + r.active,
                                           s.positions + r.positions)
            else:
                layers[r.name] = r
        return layers


def counting() -> bool:
    """True inside a :class:`MacCounter` (containers skip the bookkeeping otherwise)."""
    return bool(_ACTIVE)


def record(module: nn.Module, kind: str, macs: int, active: int, positions: int) -> None:
    """Called by the feature containers for each conv and norm they run."""
    for counter in _ACTIVE:
        counter.add(module, kind, macs, active, positions)
