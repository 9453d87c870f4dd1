"""Full-resolution segmentation of images of any size: sliding-window (tiled) inference.

The image is covered by tiles of ``tile = (H_t, W_t)`` pixels, ``stride`` apart (both
multiples of 8, so every tile's feature cells are cells of the whole image's grid; the last
tile of a row or column is moved back to end at the image's edge). Tiles go through the cascade
``batch`` at a time: the hard pixels of a batch of tiles form one sparse tensor. Each tile's
decided logits (on the feature grid, ``[K, H_t / 8, W_t / 8]``) are summed into one grid map
for the whole image and averaged where tiles overlap, a cell counting less the closer it lies
to a tile edge inside the image (its context there was cut); the labels at full resolution are then
assembled from that map band by band (:mod:`sparse_lc.assembly`), as ``uint8``.

Memory is bounded by the tile batch, the grid map (``K / 64`` floats per pixel) and the
``uint8`` label map: full-resolution logits of the whole image are never held. One tile
covering the whole image gives exactly the untiled run's labels.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..analysis import DenseMacs, count_macs, nested_masks
from ..assembly import STRIDE, assemble_labels, grid_size, interpolation_dtype, quad_rows
from ..cascade import LayerCascade
from ..rho import Rho
from ..utils import eval_mode, prepare_images

BAND_CELLS = 32  # grid rows assembled at a time (256 output rows)
MIN_TILE = 512  # default tiles are the training crop, but at least this: context matters more than the crop


@dataclass(frozen=True)
class Tiling:
    """How full-resolution images larger than a tile are cut: tile size, stride, tiles per batch."""

    tile: Tuple[int, int] = (MIN_TILE, MIN_TILE)
    stride: Tuple[int, int] = (3 * MIN_TILE // 4, 3 * MIN_TILE // 4)
    batch: int = 4

    def __post_init__(self) -> None:
        check_tiling(self.tile, self.stride)
        if self.batch < 1:
            raise ValueError(f"tile batch must be >= 1, got {self.batch}")

    def applies(self, height: int, width: int) -> bool:
        """Whether an image of this size is cut (one larger than a tile in either direction)."""
        return height > self.tile[0] or width > self.tile[1]

    @classmethod
    def for_crop(cls, crop_size: Tuple[int, int], tile: Optional[Tuple[int, int]] = None,
                 stride: Optional[Tuple[int, int]] = None, batch: int = 4) -> "Tiling":
        """Defaults: tiles of the training crop (at least :data:`MIN_TILE`, rounded up to a
        multiple of 8), a stride of 3/4 of the tile (rounded down to a multiple of 8)."""
        if tile is None:
            tile = tuple(STRIDE * cells for cells in grid_size(*(max(side, MIN_TILE) for side in crop_size)))
        if stride is None:
            stride = tuple(max(STRIDE, 3 * side // 4 // STRIDE * STRIDE) for side in tile)
        return cls(tuple(tile), tuple(stride), batch)


@dataclass
class TiledResult:
    """What :func:`segment_tiled` returns for one image of ``H x W`` pixels."""

    labels: np.ndarray          # [H, W] uint8 class ids
    grid_logits: torch.Tensor   # [K, h, w]: the tiles' decided logits, averaged (h, w = H/8, W/8 rounded up)
    stage_map: np.ndarray       # [h, w] uint8 (grid): the highest stage any tile used on the cell
    stage_shares: Tuple[float, float, float]  # of all tile cells, decided by stage 1, 2, 3
    tiles: int
    seconds: float              # the model's time (tiles, averaging and assembly), not file I/O
    macs_cascade: int
    macs_dense: int             # the same tiles run dense


def tile_origins(length: int, tile: int, stride: int) -> List[int]:
    """First pixels of the tiles along one side of ``length`` pixels (padded to a multiple of
    8): ``0, stride, 2 stride, ...``, the last one moved back to end at the edge."""
    padded = STRIDE * grid_size(length, 1)[0]
    if padded <= tile:
        return [0]
    origins = list(range(0, padded - tile, stride))
    return origins + [padded - tile]


def check_tiling(tile: Tuple[int, int], stride: Tuple[int, int]) -> None:
    """ValueError unless the tile and the stride are positive multiples of 8, the stride at most
    the tile (no gaps)."""
    for t, s in zip(tile, stride):
        if t <= 0 or s <= 0 or t % STRIDE or s % STRIDE or s > t:
            raise ValueError(f"tile {list(tile)} and stride {list(stride)}: both must be multiples of {STRIDE}, "
                             f"the stride positive and at most the tile")


@torch.no_grad()
def segment_tiled(model: LayerCascade, image: np.ndarray, rho: Optional[Rho] = None,
                  tile: Tuple[int, int] = Tiling.tile, stride: Tuple[int, int] = Tiling.stride,
                  batch: int = Tiling.batch, execution: str = "sparse", channel_order: str = "bgr",
                  progress: bool = False, hard_shares: Optional[Tuple[float, float]] = None,
                  dense_macs: Optional[DenseMacs] = None, warm_up: bool = False) -> TiledResult:
    """Segment a uint8 image ``[H, W, 3]`` (BGR by default) of any size at full resolution,
    tile by tile (see the module docstring). ``execution="dense"`` with ``rho=1`` runs the same
    tiles dense, for comparison; ``hard_shares`` (for benchmarks, as ``bench --hard-share``)
    forces clustered hard masks of these shares in every tile instead of the thresholds.
    ``dense_macs``: the model's, if the caller keeps one (it measures once per model).
    ``warm_up``: first run one untimed batch of tiles of each batch size the image needs (a
    full batch, the last one), so that one-time set-up (kernels chosen for new shapes,
    allocations, spconv's first call) is not counted in ``seconds``. The model runs in eval
    mode, and is put back as it was."""
    Tiling(tile, stride, batch)  # the checks
    height, width = image.shape[:2]
    grid = grid_size(height, width)
    tile_h, tile_w = min(tile[0], grid[0] * STRIDE), min(tile[1], grid[1] * STRIDE)
    origins = [(y, x) for y in tile_origins(height, tile_h, stride[0]) for x in tile_origins(width, tile_w, stride[1])]
    batches = [(first, origins[first:first + batch]) for first in range(0, len(origins), batch)]
    run = functools.partial(_run_tiles, model, image, (tile_h, tile_w), rho=rho, execution=execution,
                            channel_order=channel_order, hard_shares=hard_shares)
    param = next(model.parameters())
    # sums kept on the model's device (nothing read back per tile), half-precision logits in float32
    total = torch.zeros(model.num_classes, *grid, dtype=interpolation_dtype(param.dtype), device=param.device)
    count = torch.zeros(grid, dtype=total.dtype, device=param.device)
    stage_map = torch.zeros(grid, dtype=torch.uint8, device=param.device)
    decided_by = torch.zeros(3, dtype=torch.float64, device=param.device)
    counters = []
    weights: Dict[Tuple[bool, ...], torch.Tensor] = {}  # a tile's cell weights depend on which edges it cuts
    with eval_mode(model):
        if warm_up:
            for first, chunk in {len(chunk): (first, chunk) for first, chunk in batches}.values():
                run(chunk, first)
            if param.device.type == "cuda":
                torch.cuda.synchronize()  # the warm-up's kernels finish outside the timed part
        start = time.perf_counter()
        for first, chunk in tqdm(batches, desc="tiles", unit="batch", disable=not progress):
            result, counter = run(chunk, first)
            counters.append(counter)  # read at the end: a count read now would wait for the device
            for i, (y, x) in enumerate(chunk):
                cells = (slice(y // STRIDE, (y + tile_h) // STRIDE), slice(x // STRIDE, (x + tile_w) // STRIDE))
                edges = _cut_edges(y, x, tile_h, tile_w, grid)
                if edges not in weights:
                    weights[edges] = _weights(y, x, tile_h, tile_w, grid).to(total.device, total.dtype)
                weight = weights[edges]
                total[:, cells[0], cells[1]] += result.decided[i].to(total.dtype) * weight
                count[cells] += weight
                stage_map[cells] = torch.maximum(stage_map[cells], result.stage_map[i])
            decided_by += result.stage_counts.sum(0).double()
        grid_logits = total / count
        labels = assemble_in_bands(grid_logits, (height, width))
        macs = sum(counter.total() for counter in counters)
        seconds = time.perf_counter() - start
        dense = (dense_macs or DenseMacs(model))(tile_h, tile_w) * len(origins)
    shares = tuple((decided_by / decided_by.sum()).tolist())
    return TiledResult(labels, grid_logits.cpu(), stage_map.cpu().numpy(), shares, len(origins), seconds, macs,
                       dense)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on ``device``; to CUDA through pinned memory without blocking, so the host
    goes on preparing the next tiles (a copy from ordinary memory waits for the device)."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _cut_edges(y: int, x: int, tile_h: int, tile_w: int, grid: Tuple[int, int]) -> Tuple[bool, bool, bool, bool]:
    """Which of a tile's edges (top, bottom, left, right) lie inside the image: all that its
    cell weights (:func:`_weights`) depend on."""
    return y > 0, y // STRIDE + tile_h // STRIDE < grid[0], x > 0, x // STRIDE + tile_w // STRIDE < grid[1]


def _run_tiles(model: LayerCascade, image: np.ndarray, size: Tuple[int, int], chunk: List[Tuple[int, int]],
               first: int, rho: Optional[Rho], execution: str, channel_order: str,
               hard_shares: Optional[Tuple[float, float]]):
    """One forward pass over the tiles of ``size`` at the origins ``chunk`` (``first``: the
    index of its first tile, the seed of forced masks), MACs counted: ``(result, counter)``."""
    tile_h, tile_w = size
    param = next(model.parameters())
    tiles = torch.stack([_tile(image, y, x, tile_h, tile_w, model, channel_order) for y, x in chunk])
    forced = {} if hard_shares is None else {"hard_masks": tuple(
        to_device(m, param.device) for m in nested_masks((len(chunk), tile_h // STRIDE, tile_w // STRIDE),
                                                         hard_shares, seed=first))}
    return count_macs(model, to_device(tiles, param.device).to(param.dtype), rho=rho, execution=execution,
                      labels=False, **forced)


def _weights(y: int, x: int, tile_h: int, tile_w: int, grid: Tuple[int, int]) -> torch.Tensor:
    """``[h_t, w_t]``: how much a tile's cell counts where tiles overlap. A cell near a tile edge
    that lies inside the image saw a cut context: its weight halves with each cell closer to
    that edge, from 64 six cells in (powers of two, so a lone tile's average is its logits
    exactly). Edges on the image's border cut nothing."""
    rows, cols = tile_h // STRIDE, tile_w // STRIDE
    far = torch.full((), 64)
    i, j = torch.arange(rows), torch.arange(cols)
    top = i if y > 0 else far.expand(rows)
    bottom = rows - 1 - i if y // STRIDE + rows < grid[0] else far.expand(rows)
    left = j if x > 0 else far.expand(cols)
    right = cols - 1 - j if x // STRIDE + cols < grid[1] else far.expand(cols)
    distance = torch.minimum(torch.minimum(top, bottom)[:, None], torch.minimum(left, right)[None])
    return torch.exp2(distance.clamp(max=6).double())


def _tile(image: np.ndarray, y: int, x: int, tile_h: int, tile_w: int, model: LayerCascade,
          channel_order: str) -> torch.Tensor:
    """The normalised tile at ``(y, x)``, zero-padded (after normalisation, as the untiled run
    pads) where it passes the image's edge. ``[3, tile_h, tile_w]``."""
    crop = image[y:y + tile_h, x:x + tile_w]
    normalised = prepare_images(np.ascontiguousarray(crop), model.pixel_mean, model.pixel_std, channel_order)[0]
    return F.pad(normalised, (0, tile_w - crop.shape[1], 0, tile_h - crop.shape[0]))


def assemble_in_bands(decided: torch.Tensor, size: Tuple[int, int]) -> np.ndarray:
    """``[K, h, w]`` grid logits of a whole image -> ``[H, W]`` uint8 labels, assembled
    :data:`BAND_CELLS` grid rows at a time. Each band is assembled from its rows and one
    more on each side, which is all its quads read, so the labels are those of
    :func:`~sparse_lc.assembly.assemble_labels` on the whole map."""
    height, width = size
    cells = decided.shape[1]
    labels = np.empty((height, width), np.uint8)
    for first in range(0, cells, BAND_CELLS):
        last = min(first + BAND_CELLS, cells)  # quads [first, last) of this band
        top, bottom = max(first - 1, 0), min(last + 1, cells)  # the grid rows they read, with context
        band = decided[None, :, top:bottom].contiguous(memory_format=torch.channels_last)
        rows = quad_rows(first, last, cells, height)  # output rows of the band's quads
        part = assemble_labels(band, ((bottom - top) * STRIDE, width))[0]
        local = slice(rows.start - top * STRIDE, rows.stop - top * STRIDE)
        labels[rows] = part[local].to(torch.uint8).cpu().numpy()
    return labels

