"""What a call dispatches: host-syncing ops, aten ops and (on CUDA) kernel launches.

On a GPU every op that needs a value of a device tensor on the host stops the CPU until the
GPU has caught up (a *host sync*): CPU dispatch and GPU work then no longer overlap, and the
sparse stages, made of many small ops, become launch-bound. The same ops run on the CPU, so
:func:`count_host_syncs` finds them there with ``torch.profiler`` (no GPU needed) and names the
line of Python that called each. The ops counted (:data:`SYNC_OPS`):

* ``aten::_local_scalar_dense``: ``.item()``, ``int(t)``, ``bool(t)``, ``if t:``;
* ``aten::nonzero``: ``nonzero()``, and indexing or assigning with a boolean mask;
* ``aten::equal`` (``torch.equal``), ``aten::masked_select``, ``torch.unique`` and
  ``bincount``, whose output size depends on the values.

:func:`count_ops` counts the aten ops a call dispatches from Python (nested ops, e.g. the
``aten::empty`` inside an ``aten::add``, not counted again) and, on CUDA, the kernels it
launches (``cudaLaunchKernel`` and friends, from the profiler's runtime events).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch
from torch.profiler import ProfilerActivity, profile

SYNC_OPS = frozenset({"aten::_local_scalar_dense", "aten::nonzero", "aten::equal", "aten::masked_select",
                      "aten::_unique2", "aten::unique_dim", "aten::unique_consecutive", "aten::bincount"})
LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx",
            "cudaLaunchCooperativeKernel")
OURS = "sparse_lc"
LIBRARIES = ("spconv", "cumm")


@dataclass
class HostSyncs:
    """The host-syncing ops of one call, by the line that called them."""

    sites: Dict[str, int] = field(default_factory=dict)  # "sparse_lc/ops/active_set.py(72): from_mask" -> count

    @property
    def total(self) -> int:
        return sum(self.sites.values())

    def count(self, owner: str) -> int:
        """Syncs called from ``owner``'s code: ``"sparse_lc"``, ``"spconv"``, ``"cumm"`` or ``"torch"``
        (torch's own Python, e.g. ``F.interpolate``'s checks)."""
        return sum(n for site, n in self.sites.items() if _owner(site) == owner)

    def describe(self) -> str:
        """One line per site, most first."""
        return "\n".join(f"{n:3d}  {site}" for site, n in sorted(self.sites.items(), key=lambda kv: -kv[1]))


@dataclass
class OpCount:
    aten_ops: int          # aten ops dispatched from Python (not counting ops nested in them)
    kernel_launches: Optional[int]  # CUDA kernels launched (None: not a CUDA run)
    by_name: Dict[str, int]


def _owner(site: str) -> str:
    path = site.replace("\\", "/")
    for library in LIBRARIES:
        if f"/{library}/" in path or path.startswith(f"{library}/"):
            return library
    if f"/{OURS}/" in path or path.startswith(f"{OURS}/"):
        return OURS
    return "torch"


def _site(frames: List[str]) -> str:
    """The innermost frame of a stack that is not torch's own machinery (``module.py`` calls,
    built-in method wrappers): the line that asked for the op."""
    for frame in frames:
        path = frame.replace("\\", "/")
        if frame.startswith("<built-in") or "torch/nn/modules/module.py" in path or "torch/autograd/" in path:
            continue
        for marker in (*LIBRARIES, OURS):
            cut = path.rfind(f"/{marker}/")
            if cut >= 0:
                return path[cut + 1:]
        return path.rsplit("site-packages/", 1)[-1]
    return "?"


def count_host_syncs(fn: Callable[[], object]) -> HostSyncs:
    """Run ``fn()`` once under the profiler (on the CPU, or wherever its tensors are) and count
    its host-syncing ops (:data:`SYNC_OPS`) by calling line."""
    config = torch._C._profiler._ExperimentalConfig(verbose=True)  # Python frames in the stacks
    with profile(activities=[ProfilerActivity.CPU], with_stack=True, experimental_config=config) as prof:
        fn()
    sites: Counter = Counter()
    for event in prof.events():
        if event.name not in SYNC_OPS or _nested_in_op(event, SYNC_OPS):
            continue
        holder = event
        while holder is not None and not holder.stack:  # an op nested in another one has no stack of its own
            holder = holder.cpu_parent
        sites[_site(holder.stack if holder is not None else [])] += 1
    return HostSyncs(dict(sites))


def _nested_in_op(event, names) -> bool:
    """True if an ancestor of ``event`` is also one of ``names`` (``aten::equal`` calling
    ``item`` is one sync, not two)."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name in names:
            return True
        parent = parent.cpu_parent
    return False


def count_ops(fn: Callable[[], object], cuda: bool = False) -> OpCount:
    """Run ``fn()`` once under the profiler: the aten ops it dispatches from Python and, with
    ``cuda``, the CUDA kernels it launches."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize()
    events = prof.events()
    aten = Counter(e.name for e in events if e.name.startswith("aten::") and not _nested_in_aten(e))
    launches = sum(1 for e in events if e.name in LAUNCHES) if cuda else None
    return OpCount(sum(aten.values()), launches, dict(aten))


def _nested_in_aten(event) -> bool:
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return True
        parent = parent.cpu_parent
    return False
