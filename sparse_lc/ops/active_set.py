"""The active pixels of a sparse stage, and what every op on them shares.

An :class:`ActiveSet` holds the pixels a later stage computes: their coordinates (``indices``,
``[N, 3]`` int32: batch, y, x, in row-major order, as spconv wants) and, built once on first use,
one spconv rulebook per kernel size and dilation (whatever branch of a block the conv is in) and
one neighbour table per window (grouped convs, pools). Finding the pixels (``nonzero``) is the one
op of a stage that needs a value of the device on the host.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple, Union

import torch

from . import features as rules
from .spconv_backend import GemmRulebook, NativeRulebook, rulebook_key

_DEBUG = {"checks": os.environ.get("SPARSE_LC_DEBUG", "") not in ("", "0")}


def debug_checks() -> bool:
    """Whether the checks that cost a host sync run (``SPARSE_LC_DEBUG=1``, or
    :func:`set_debug_checks`): that a restricted set is a subset of its active set. Off by
    default: the cascade builds its sets nested, so the check can only fail on misuse."""
    return _DEBUG["checks"]


def set_debug_checks(enabled: bool) -> bool:
    """Turn the debug checks on or off; returns the previous setting."""
    previous, _DEBUG["checks"] = _DEBUG["checks"], bool(enabled)
    return previous



Pair = Union[int, Tuple[int, int]]


def _pair(value: Pair) -> Tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))



class ActiveSet:
    """The active pixels of a ``[B, C, h, w]`` feature grid, and what the ops on them share.

    indices:       ``[N, 3]`` int32 (batch, y, x), row-major order (spconv's coordinates).
    flat:          ``[N]`` int64, ``(b * h + y) * w + x``: each row's place in the flattened grid.
    grid_batch:    B; spatial_shape: ``(h, w)``; prefix: the stage's name (``"stage2"``).
    batch_size:    spconv's batch size: B, plus the extra images of a padded set.
    num_pad:       rows of padding at the end (:meth:`padded`; 0 for a set of real pixels).

    Rulebooks (:meth:`rulebook`) and neighbour tables (:meth:`neighbours`) are built once per
    set, on first use, and kept as long as the set lives.
    """

    __slots__ = ("indices", "flat", "grid_batch", "batch_size", "spatial_shape", "prefix", "num_pad", "_rulebooks",
                 "_neighbours")

    def __init__(self, indices: torch.Tensor, flat: torch.Tensor, batch_size: int, spatial_shape: Tuple[int, int],
                 prefix: str, num_pad: int = 0, spconv_batch: Optional[int] = None):
        self.indices = indices
        self.flat = flat
        self.grid_batch = batch_size
        self.batch_size = batch_size if spconv_batch is None else spconv_batch
        self.spatial_shape = spatial_shape
        self.prefix = prefix
        self.num_pad = num_pad
        self._rulebooks: Dict[Tuple, object] = {}
        self._neighbours: Dict[Tuple, torch.Tensor] = {}

    @classmethod
    def from_mask(cls, mask: torch.Tensor, prefix: str) -> "ActiveSet":
        """The True pixels of ``mask [B, h, w]`` (one host sync: their number)."""
        batch, height, width = mask.shape
        where = mask.nonzero()  # [N, 3] int64, pixels in row-major order (the tensor itself is column-major)
        b, y, x = where.unbind(1)
        return cls(where.to(torch.int32).contiguous(), (b * height + y) * width + x, batch, (height, width), prefix)

    @property
    def num_rows(self) -> int:
        return self.indices.shape[0]

    @property
    def positions(self) -> int:
        """Pixels of the full grid, ``B * h * w`` (padding's place: this one, past the end)."""
        return self.grid_batch * self.spatial_shape[0] * self.spatial_shape[1]

    def padded(self, num_rows: int) -> "ActiveSet":
        """This set with rows of padding appended up to ``num_rows``: pixels of extra images
        (batch B, B + 1, ... in raster order), so no padding row is a neighbour of a real one and
        every op computes the real rows exactly as without padding. Their ``flat`` is
        :attr:`positions`: dropped when scattered (:meth:`SparseFeatures.to_dense`). spconv's
        batch size depends on ``num_rows`` only (room for any amount of padding), so that sets
        padded to one size have the same shapes everywhere. No host sync."""
        pad = num_rows - self.num_rows
        if pad < 0:
            raise ValueError(f"cannot pad {self.num_rows} rows to {num_rows}")
        height, width = self.spatial_shape
        j = torch.arange(pad, device=self.indices.device)
        extra = torch.stack([self.grid_batch + j // (height * width), j % (height * width) // width, j % width], 1)
        indices = torch.cat([self.indices, extra.to(torch.int32)])
        flat = torch.cat([self.flat, torch.full_like(j, self.positions)])
        images = self.grid_batch + -(-num_rows // (height * width))  # room for any padding of num_rows rows
        return ActiveSet(indices, flat, self.grid_batch, self.spatial_shape, self.prefix, self.num_pad + pad, images)

    def same_pixels(self, other: "ActiveSet") -> bool:
        """Whether ``other`` holds the same pixels in the same order (compares the indices)."""
        return self.indices.shape == other.indices.shape and bool(torch.equal(self.indices, other.indices))

    def subset(self, mask: torch.Tensor, prefix: str) -> Tuple["ActiveSet", torch.Tensor]:
        """The pixels of this set that are True in ``mask [B, h, w]``, as a new set, and their
        rows in this one (``[M]`` int64). One host sync (their number); with
        :func:`debug_checks` a second, to check that ``mask`` has no pixel outside this set."""
        flat_mask = mask.reshape(-1)
        if self.num_pad:  # padding rows read one False past the end of the grid
            flat_mask = torch.cat([flat_mask, flat_mask.new_zeros(1)])
        keep = flat_mask.index_select(0, self.flat)  # [N] bool
        rows = keep.nonzero().squeeze(1)
        if debug_checks() and rows.shape[0] != int(mask.sum()):
            raise ValueError("restrict: the mask has pixels outside this tensor's active set")
        subset = ActiveSet(self.indices.index_select(0, rows), self.flat.index_select(0, rows), self.grid_batch,
                           self.spatial_shape, prefix)
        return subset, rows

    def rulebook(self, kernel_size: Tuple[int, int], dilation: Tuple[int, int]):
        """The rulebook of this kernel size and dilation (built on first use, with gradient
        tables when gradients are on): :class:`NativeRulebook` on the CPU, :class:`GemmRulebook`
        on CUDA."""
        train = torch.is_grad_enabled()
        key = (kernel_size, dilation, train and self.indices.is_cuda)
        book = self._rulebooks.get(key)
        if book is None:
            if self.indices.is_cuda:
                book = GemmRulebook(self, kernel_size, dilation, train)
            else:
                book = NativeRulebook(self, kernel_size, dilation)
            self._rulebooks[key] = book
        return book

    def rulebooks(self) -> Dict[str, object]:
        """The rulebooks built so far, by :func:`rulebook_key`."""
        return {rulebook_key(self.prefix, kernel, dilation): book
                for (kernel, dilation, _), book in self._rulebooks.items()}

    def neighbours(self, kernel_size: Pair, dilation: Pair = 1) -> torch.Tensor:
        """``[kh * kw, N]`` int64: the row of each row's neighbour at each offset of a
        ``kh x kw`` window dilated by ``dilation``, in raster order (-1: inactive). An odd side
        is centred; an even one is placed as torch's ``padding='same'`` places it (the extra
        offset after: a 2-wide window reads offsets 0 and 1)."""
        (kh, kw), (dh, dw) = _pair(kernel_size), _pair(dilation)
        key = (kh, kw, dh, dw)
        table = self._neighbours.get(key)
        if table is None:
            (top, bottom), (left, right) = rules.same_padding(kh, dh), rules.same_padding(kw, dw)
            height, width = self.spatial_shape
            idx = self.indices.long()
            lookup = idx.new_full((self.batch_size, height + top + bottom, width + left + right), -1)
            lookup[idx[:, 0], idx[:, 1] + top, idx[:, 2] + left] = torch.arange(len(idx), device=idx.device)
            table = torch.stack([lookup[idx[:, 0], idx[:, 1] + dy, idx[:, 2] + dx]
                                 for dy in range(0, top + bottom + 1, dh) for dx in range(0, left + right + 1, dw)])
            self._neighbours[key] = table
        return table

    def neighbours_or_self(self, kernel_size: Pair, dilation: Pair = 1) -> torch.Tensor:
        """:meth:`neighbours` with each inactive neighbour replaced by the row itself (cached):
        what a maximum over the window reads without changing its value."""
        key = ("self", *_pair(kernel_size), *_pair(dilation))
        table = self._neighbours.get(key)
        if table is None:
            table = self.neighbours(kernel_size, dilation)
            table = torch.where(table >= 0, table, torch.arange(table.shape[1], device=table.device))
            self._neighbours[key] = table
        return table

    def pair_count(self, kernel_size: Pair, dilation: Pair = 1) -> torch.Tensor:
        """(row, active neighbour) pairs of a window, centre included, from the neighbour
        table: what a submanifold conv of this window computes (a 0-d tensor, no host sync)."""
        return (self.neighbours(kernel_size, dilation) >= 0).sum(dtype=torch.int64)

