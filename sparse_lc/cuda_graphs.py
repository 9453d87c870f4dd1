"""CUDA graphs of a cascade's inference pass: one launch for what would be hundreds.

A sparse stage on a GPU is hundreds of small kernels, each launched from Python; the GPU waits
on their dispatch more than it computes. A CUDA graph records the kernels of one pass once and
replays them all with one launch. Graphs need static shapes, so:

* **Stage 1 and its head**: one graph per input shape and dtype.
* **Stages 2 and 3 of the dense run** (every pixel, no mask): one graph per shape, so that the
  cascade is timed against a dense run replayed the same way.
* **Stages 2 and 3 with their heads**, sparse: the number of active pixels changes from image to image.
  The rows are padded to the next of a few sizes (:func:`bucket`: at most 25% padding), with
  padding rows in extra images that no real pixel sees (:meth:`ActiveSet.padded`), so the real
  rows come out exactly as without padding; one graph per stage, grid, size and channel count.
  The rulebooks are built outside the graph, on each pass's padded pixels, and copied into the
  graph's; the pool neighbour tables are recomputed inside it.

What a graph is replayed with is copied into its static buffers; its outputs are copied out (the
logits) or used before the next replay (stage 2's rows, by stage 3). MACs are counted from what
each graph's first pass recorded (:func:`sparse_lc.ops.mac_counter.replay`), on the real rows.

Graphs apply in inference only (no gradient, eval mode), on CUDA. A graph reads the weights
where they were when it was captured: in-place updates (``load_state_dict``, an optimizer) are
seen, a parameter replaced by a new tensor is not, and moving the model (``.to()``) drops its
graphs. If a capture fails (spconv refuses an op inside it) or a replay disagrees with the
eager pass, one warning names the reason and that part runs eagerly from then on.

Use: ``model.cuda_graphs = True``, or ``--cuda-graphs`` on ``segment`` and ``bench``.
"""
from __future__ import annotations

import warnings
import weakref
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .errors import SparseLCWarning
from .ops import ActiveSet, DenseFeatures, Features, MacCounter, SparseFeatures, mac_counter

MAX_GRAPHS = 64  # per model; the least recently used is dropped beyond (its memory freed)
WARMUP_PASSES = 2  # eager passes before a capture, on a side stream (torch's recipe)


class CudaGraphWarning(SparseLCWarning):
    """A part of the pass could not be run as a CUDA graph (it runs eagerly instead)."""


def bucket(rows: int) -> int:
    """The padded number of rows for ``rows`` active rows: the smallest of 256, 320, 384, 448,
    512, 640, ... (four steps per doubling) above ``rows``, so padding is at most 25% (and at
    least one row, so every padded set has padding)."""
    base = 256
    while True:
        for step in (4, 5, 6, 7):
            if base // 4 * step > rows:
                return base // 4 * step
        base *= 2


class _Recording:
    """A function of static buffers: captured as a CUDA graph (``capture``), else kept as the
    function itself, replayed by calling it again (how the CPU tests run the same plumbing)."""

    def __init__(self, fn: Callable[[], Tuple], capture: bool):
        self.fn, self.graph = fn, None
        if not capture:
            self.outputs = fn()
            return
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_PASSES):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = fn()

    def replay(self) -> Tuple:
        if self.graph is None:
            with mac_counter.paused():  # the replay's work is counted from the recorded sources
                self.outputs = self.fn()
        else:
            self.graph.replay()
        return self.outputs


class Stage1Graph:
    """Stage 1 and its head for one padded input shape: ``[B, 3, H, W] -> (f1, logits1)``."""

    def __init__(self, model, padded: torch.Tensor, capture: bool):
        self.input = padded.clone()
        with MacCounter(model) as counter:  # the work of one pass, recorded for the replays
            expected = model.run_stage1_eagerly(self.input)
        self.records = counter.records
        self.recording = _Recording(lambda: model.run_stage1_eagerly(self.input), capture)
        _check_replay(self.recording.replay(), expected, "stage 1")

    def __call__(self, padded: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        self.input.copy_(padded)
        f1, logits1 = self.recording.replay()
        if mac_counter.counting():
            mac_counter.replay(self.records, 0, lambda window: 0)
        return f1, logits1.clone()  # f1 is read before the next replay; the logits are kept in the result


class SparseStageGraph:
    """Stage ``stage`` (2 or 3) and its head on rows padded to one size: ``SparseFeatures`` ->
    (the stage's output rows, on the input's active set; the head's logits ``[B, K, h, w]``)."""

    def __init__(self, model, stage: int, example: SparseFeatures, num_rows: int, capture: bool):
        padded = example.padded(num_rows)
        self.num_rows, self.rows = num_rows, padded.rows.clone()
        a = padded.active
        self.active = ActiveSet(a.indices.clone(), a.flat.clone(), a.grid_batch, a.spatial_shape, a.prefix, a.num_pad,
                                a.batch_size)

        def run() -> Tuple:
            self.active._neighbours.clear()  # pool neighbours: recomputed inside the graph, from its indices
            out, logits = model.run_stage_eagerly(stage, SparseFeatures(self.rows, self.active))
            return (out.rows if stage == 2 else None), logits  # stage 3's rows are not needed after it

        with MacCounter(model) as counter:  # builds the rulebooks (outside any graph); records the work
            expected = run()
        self.records = counter.records
        self.recording = _Recording(run, capture)
        _check_replay(self.recording.replay(), expected, f"stage {stage}")

    def __call__(self, x: SparseFeatures) -> Tuple[Optional[SparseFeatures], torch.Tensor]:
        n = x.num_active
        fresh = x.active.padded(self.num_rows)
        self.active.indices.copy_(fresh.indices)
        self.active.flat.copy_(fresh.flat)
        for (kernel, dilation, _), book in self.active._rulebooks.items():
            book.copy_(fresh.rulebook(kernel, dilation))  # this pass's rulebook, built outside the graph
        self.rows[:n].copy_(x.rows)
        self.rows[n:].zero_()
        rows, logits = self.recording.replay()
        if mac_counter.counting():
            mac_counter.replay(self.records, n, lambda window: x.active.pair_count(*window))
        out = None if rows is None else SparseFeatures(rows[:n], x.active)  # read before the next replay
        return out, logits.clone()


class DenseStageGraph:
    """Stage ``stage`` (2 or 3) and its head on a whole map (the dense run: every pixel, no
    mask): ``DenseFeatures`` -> (the stage's output map, the head's logits), one graph per shape,
    so that the dense run is replayed as the cascade is."""

    def __init__(self, model, stage: int, example: DenseFeatures, capture: bool):
        self.input = example.data.clone()

        def run() -> Tuple:
            out, logits = model.run_stage_eagerly(stage, DenseFeatures(self.input))
            return (out.data if stage == 2 else None), logits

        with MacCounter(model) as counter:
            expected = run()
        self.records = counter.records
        self.recording = _Recording(run, capture)
        _check_replay(self.recording.replay(), expected, f"dense stage {stage}")

    def __call__(self, x: DenseFeatures) -> Tuple[Optional[DenseFeatures], torch.Tensor]:
        self.input.copy_(x.data)
        data, logits = self.recording.replay()
        if mac_counter.counting():
            mac_counter.replay(self.records, 0, lambda window: 0)
        return (None if data is None else DenseFeatures(data)), logits.clone()


def _check_replay(replayed: Tuple, expected: Tuple, part: str) -> None:
    """A replay must give what the eager pass gave (to float noise): else it is not used."""
    for got, want in zip(replayed, expected):
        if got is None:
            continue
        scale = float(want.abs().max()) if want.numel() else 0.0
        if got.shape != want.shape or float((got - want).abs().max() if want.numel() else 0.0) > 1e-3 * (1 + scale):
            raise RuntimeError(f"the replay of {part} differs from its eager pass")


class GraphRunner:
    """The CUDA graphs of one model (see the module docstring); ``capture=False`` runs the same
    static-buffer plumbing without graphs (for tests on the CPU)."""

    def __init__(self, model, capture: bool = True):
        self._model = weakref.ref(model)
        self.capture = capture
        self.graphs: "OrderedDict[Tuple, object]" = OrderedDict()
        self.refused: Dict[str, str] = {}  # part -> why it runs eagerly

    def stage1(self, padded: torch.Tensor) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """Stage 1's outputs from its graph, or None: the caller runs it eagerly."""
        key = ("stage1", tuple(padded.shape), padded.dtype)
        graph = self._graph(key, "stage 1", lambda: Stage1Graph(self._model(), padded, self.capture))
        return None if graph is None else graph(padded)

    def stage(self, stage: int, x: Features) -> Optional[Tuple[Optional[Features], torch.Tensor]]:
        """Stage ``stage``'s outputs from a graph: sparse rows from the graph of their bucket, a
        whole dense map from the graph of its shape; None: run it eagerly (a masked dense map,
        the reference path, always is)."""
        if isinstance(x, SparseFeatures):
            a, num_rows = x.active, bucket(x.num_active)
            key = (f"stage{stage}", a.grid_batch, a.spatial_shape, num_rows, x.num_channels, x.rows.dtype)
            make = lambda: SparseStageGraph(self._model(), stage, x, num_rows, self.capture)  # noqa: E731
            graph = self._graph(key, "the sparse stages", make)
        elif x.mask is None:
            key = (f"dense stage{stage}", tuple(x.data.shape), x.data.dtype)
            graph = self._graph(key, "the dense stages", lambda: DenseStageGraph(self._model(), stage, x, self.capture))
        else:
            return None
        return None if graph is None else graph(x)

    def _graph(self, key: Tuple, part: str, make: Callable[[], object]):
        if part in self.refused:
            return None
        graph = self.graphs.get(key)
        if graph is None:
            try:
                with mac_counter.paused():  # setting a graph up is not the pass's work
                    graph = make()
            except Exception as e:  # noqa: BLE001  (whatever the capture refuses, the pass runs eagerly)
                reason = " ".join(f"{type(e).__name__}: {e}".split())[:300]
                self.refused[part] = reason
                warnings.warn(f"CUDA graphs: {part} run eagerly from now on: capturing it failed ({reason})",
                              CudaGraphWarning, stacklevel=4)
                return None
            self.graphs[key] = graph
            while len(self.graphs) > MAX_GRAPHS:
                self.graphs.popitem(last=False)
        self.graphs.move_to_end(key)
        return graph


_RUNNERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def runner_for(model, capture: bool = True) -> GraphRunner:
    """The graph runner of ``model`` (made on first use; dropped with the model)."""
    runner = _RUNNERS.get(model)
    if runner is None or runner.capture != capture:
        runner = _RUNNERS[model] = GraphRunner(model, capture)
    return runner


def drop_graphs(model) -> None:
    """Forget ``model``'s graphs (after its weights moved: the graphs read the old memory)."""
    _RUNNERS.pop(model, None)


def graph_report(model) -> List[str]:
    """What runs as graphs and what was refused, for ``bench`` and ``segment`` to say."""
    runner = _RUNNERS.get(model)
    if runner is None:
        return []
    kinds: Dict[str, int] = {}
    for key in runner.graphs:
        kinds[key[0]] = kinds.get(key[0], 0) + 1
    lines = [f"CUDA graphs: {', '.join(f'{n} of {kind}' for kind, n in sorted(kinds.items()))}"] if kinds else []
    return lines + [f"CUDA graphs refused for {part}: {why}" for part, why in runner.refused.items()]
