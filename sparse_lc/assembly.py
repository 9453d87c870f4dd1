"""From the feature grid to labels at input resolution: exact, and cheap where it can be.

The cascade decides each feature cell (output stride 8) with the logits of the stage that
decided it. The labels at input resolution are the top classes of the bilinear upsampling of
those logits (:func:`upsample_logits`: ``F.interpolate``, ``align_corners=False``, on the
channels-last maps the cascade makes). :func:`assemble_labels` gives the same labels, bit for
bit, without computing the full-resolution logits:

1. Bilinear weights are non-negative and sum to 1. Where every grid cell an output pixel
   reads (up to 2 x 2) has the same top class with a margin above float rounding, the
   interpolated top class is that class: the pixel's label is read off the grid.
2. The other pixels (near a change of label) get interpolated logits from a small einsum over
   their 2 x 2 cells; their top class is final where its margin is above rounding too.
3. The few pixels left (true near-ties) get ``F.interpolate`` itself, on windows of the grid
   whose arithmetic is that of the whole map: the same scale, the same clamping at the
   borders, channels-last with the classes as the vector lanes, so each pixel's value does not
   depend on where it lies. With fewer than 4 classes the kernel vectorizes otherwise; step 3
   then interpolates the whole map once.

Geometry (scale 8): output row ``y`` reads grid rows ``r0 = max(0, floor((y + 0.5) / 8 - 0.5))``
and ``r1 = min(r0 + 1, h - 1)`` with weight ``src - r0`` on ``r1`` (``src`` clamped at 0). The
output rows reading the same ``r0`` form the block of "quad" ``r0``: ``[0, 12)`` for quad 0,
``[8 r0 + 4, 8 r0 + 12)`` inside, ``[8 h - 4, 8 h)`` for the last. Columns likewise.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

STRIDE = 8
#: a top-2 margin must exceed this share of the largest absolute logit of the cells a pixel
#: reads (float32 rounding of their convex combination stays below 1e-6 of it)
MARGIN = 1e-5
#: at most this many classes are interpolated per quad near a change of label (the others
#: cannot be on top there); a quad with more goes to the exact path
CANDIDATES = 4
#: above this share of quads near a change of label, the whole map is interpolated (same labels;
#: the shortcut would cost more)
FULL_ABOVE = 0.15


def grid_size(height: int, width: int) -> Tuple[int, int]:
    """The feature grid of an ``H x W`` input: ``(ceil(H / 8), ceil(W / 8))`` cells (the input
    runs padded to a multiple of 8)."""
    return -(-height // STRIDE), -(-width // STRIDE)


def spread_cells(grid_map: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """``[..., h, w]`` per-cell values -> ``[..., H, W]``: each cell over its 8 x 8 input pixels,
    cropped to ``size = (H, W)`` (nearest-neighbour upsampling by 8, in the map's own dtype)."""
    return grid_map.repeat_interleave(STRIDE, dim=-2).repeat_interleave(STRIDE, dim=-1)[..., :size[0], :size[1]]


def upsample_logits(decided: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """``[B, K, h, w]`` grid logits -> ``[B, K, H, W]``: bilinear to the padded input
    ``(8 h, 8 w)``, cropped to ``size = (H, W)``. :func:`assemble_labels` equals its argmax.
    Half-precision logits are interpolated in float32 (:func:`interpolation_dtype`)."""
    height, width = size
    decided = _channels_last(decided.to(interpolation_dtype(decided.dtype)))
    up = F.interpolate(decided, size=(decided.shape[2] * STRIDE, decided.shape[3] * STRIDE), mode="bilinear",
                       align_corners=False)
    return up[:, :, :height, :width]


def interpolation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype logits are upsampled in: float32 for float16 / bfloat16 (whose rounding would
    be larger than the margins :func:`assemble_labels` relies on), else their own."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def assemble_labels(decided: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """``[B, K, h, w]`` grid logits -> ``[B, H, W]`` int64 labels, equal to
    ``upsample_logits(decided, size).max(dim=1).indices`` (see the module docstring)."""
    batch, classes, h, w = decided.shape
    if classes == 1:
        return torch.zeros(batch, *size, dtype=torch.long, device=decided.device)
    decided = decided.detach().to(interpolation_dtype(decided.dtype))
    agree, label, scale = _quads(decided)  # [B, h, w]: quad (r0, c0) read off the grid, its class, its scale
    if float((~agree).float().mean()) > FULL_ABOVE:  # labels change almost everywhere: no shortcut pays
        return upsample_logits(decided, size).max(dim=1).indices
    labels = _blocks_of(label, size)  # [B, H, W]
    quads = (~agree).nonzero()  # [N, 3]: (b, r0, c0)
    if len(quads):
        unsure = _near_changes(decided, quads, scale, labels, size)
        if len(unsure):
            b, y, x = unsure.unbind(1)
            labels[b, y, x] = _exact_labels(decided, b, y, x, size)
    return labels


def _blocks_of(label: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """``[B, h, w]`` -> ``[B, H, W]``: each quad's label over its block. With the first row and
    column repeated in front, block ``r0`` is the rows ``[8 (r0 + 1) - 4, 8 (r0 + 2) - 4)`` of
    the grid expanded 8 times, so one expand and one crop do it."""
    batch, h, w = label.shape
    padded = torch.cat([label[:, :1], label], dim=1)
    padded = torch.cat([padded[:, :, :1], padded], dim=2)  # [B, h + 1, w + 1]
    expanded = padded[:, :, None, :, None].expand(batch, h + 1, STRIDE, w + 1, STRIDE)
    half = STRIDE // 2
    return expanded.reshape(batch, STRIDE * (h + 1), STRIDE * (w + 1))[:, half:half + size[0], half:half + size[1]]


def quad_of(cells: int, length: int, device: torch.device) -> torch.Tensor:
    """``[length]``: the quad (its first grid cell, ``r0``) each output row / column reads."""
    position = (torch.arange(length, device=device, dtype=torch.float64) + 0.5) / STRIDE - 0.5
    return position.floor().clamp(0, cells - 1).long()


def quad_rows(first: int, last: int, cells: int, height: int) -> slice:
    """The output rows read through quads ``[first, last)`` of a map of ``cells`` rows: from
    ``8 first + 4`` (0 for the first quad) to ``8 last + 4`` (the padded end for the last quad),
    cropped to ``height``. Columns likewise."""
    start = 0 if first == 0 else STRIDE * first + STRIDE // 2
    stop = STRIDE * cells if last == cells else STRIDE * last + STRIDE // 2
    return slice(start, min(stop, height))


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _next(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``t`` shifted to the next cell along ``dim``, the last cell repeated (the clamp of ``r1``)."""
    return torch.cat([t.narrow(dim, 1, t.shape[dim] - 1), t.narrow(dim, t.shape[dim] - 1, 1)], dim=dim)


def _quads(decided: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per quad (indexed by its first cell): do all cells it reads share one top class, each
    with a margin above rounding; that class; and the largest absolute logit of its cells (the
    scale of any rounding in its interpolation)."""
    top2 = decided.topk(2, dim=1)
    label, margin = top2.indices[:, 0], top2.values[:, 0] - top2.values[:, 1]  # [B, h, w]
    scale = decided.abs().amax(dim=1)
    row_scale, row_margin = torch.maximum(scale, _next(scale, 1)), torch.minimum(margin, _next(margin, 1))
    quad_scale = torch.maximum(row_scale, _next(row_scale, 2))
    quad_margin = torch.minimum(row_margin, _next(row_margin, 2))
    same = (label == _next(label, 1)) & (label == _next(label, 2)) & (label == _next(_next(label, 1), 2))
    return same & (quad_margin > MARGIN * quad_scale), label, quad_scale  # NaN compares False


def _near_changes(decided: torch.Tensor, quads: torch.Tensor, scale: torch.Tensor, labels: torch.Tensor,
                  size: Tuple[int, int]) -> torch.Tensor:
    """Write into ``labels`` the pixels of the undecided ``quads`` (``[N, 3]``: b, r0, c0) whose
    top class their 2 x 2 cells settle beyond rounding; return the others (``[M, 3]``: b, y, x)
    for the exact path.

    Only candidate classes are interpolated: a class whose largest value over the quad's cells
    is below the largest smallest value of any class cannot be on top anywhere in the quad.
    Quads with more than :data:`CANDIDATES` candidates go to the exact path whole."""
    h, w = decided.shape[2:]
    b, r, c = quads.unbind(1)
    r1, c1 = (r + 1).clamp(max=h - 1), (c + 1).clamp(max=w - 1)
    cells = torch.stack([decided[b, :, r, c], decided[b, :, r, c1], decided[b, :, r1, c], decided[b, :, r1, c1]],
                        dim=-1)  # [N, K, 4]
    tol = MARGIN * scale[b, r, c]  # [N]
    low, high = cells.amin(dim=-1), cells.amax(dim=-1)  # [N, K]
    possible = high >= (low.amax(dim=1) - tol)[:, None]  # may be on top somewhere in the quad
    count = possible.sum(dim=1)
    ranked = high.masked_fill(~possible, float("-inf")).topk(min(CANDIDATES, high.shape[1]), dim=1).indices
    ruled_out = high.masked_fill(possible, float("-inf")).amax(dim=1)  # [N]: the best a non-candidate reaches
    values = torch.gather(cells, 1, ranked[:, :, None].expand(-1, -1, 4))  # [N, C, 4]
    in_rank = torch.arange(ranked.shape[1], device=b.device)[None] < count[:, None]
    values = values.masked_fill(~in_rank[:, :, None], float("-inf"))
    few = count <= CANDIDATES
    lam_y, ys = _frame(r, h)  # [N, 12] each: weight of the second cell row, output row (-1: not the quad's)
    lam_x, xs = _frame(c, w)
    inside = ((ys >= 0) & (ys < size[0]))[:, :, None] & ((xs >= 0) & (xs < size[1]))[:, None, :]  # [N, 12, 12]
    v = values.view(len(b), -1, 2, 2)  # cells (r0, c0), (r0, c1), (r1, c0), (r1, c1)
    lam_y, lam_x = lam_y.to(v.dtype)[:, None, :, None], lam_x.to(v.dtype)[:, None, None, :]
    top = v[:, :, 0:1, 0:1] * (1 - lam_x) + v[:, :, 0:1, 1:2] * lam_x
    bottom = v[:, :, 1:2, 0:1] * (1 - lam_x) + v[:, :, 1:2, 1:2] * lam_x
    f = top * (1 - lam_y) + bottom * lam_y  # [N, C, 12, 12], up to rounding
    best, index = f.max(dim=1)
    rival = torch.maximum(f.scatter(1, index[:, None], float("-inf")).amax(dim=1), ruled_out[:, None, None])
    sure = ((best - rival) > tol[:, None, None]) & few[:, None, None]  # NaN compares False
    n, yy, xx = (inside & sure).nonzero().unbind(1)
    labels[b[n], ys[n, yy], xs[n, xx]] = ranked[n, index[n, yy, xx]]
    n, yy, xx = (inside & ~sure).nonzero().unbind(1)
    return torch.stack([b[n], ys[n, yy], xs[n, xx]], 1)


def _frame(quad: torch.Tensor, cells: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Twelve output rows per quad, enough for any quad's block (the first quad's is
    ``[0, 12)``, an inside one's ``[8 r + 4, 8 r + 12)``, the last's ``[8 r + 4, 8 r + 8)``):
    the weight of the quad's second cell at each row, and the rows (``-1`` where a row is not
    the quad's). ``[N, 12]`` each."""
    start = torch.where(quad == 0, torch.zeros_like(quad), STRIDE * quad + STRIDE // 2)
    rows = start[:, None] + torch.arange(STRIDE + STRIDE // 2, device=quad.device)[None]
    src = ((rows.double() + 0.5) / STRIDE - 0.5).clamp(min=0)  # as F.interpolate, clamped at the first row
    mine = (src.floor().clamp(max=cells - 1) == quad[:, None]) & (rows < STRIDE * cells)
    return src - quad[:, None], torch.where(mine, rows, torch.full_like(rows, -1))


def _exact_labels(decided: torch.Tensor, b: torch.Tensor, y: torch.Tensor, x: torch.Tensor,
                  size: Tuple[int, int]) -> torch.Tensor:
    """Labels of output pixels ``(b, y, x)``, from ``F.interpolate`` itself: on the window of
    grid rows ``[r0, min(r0 + 2, h))`` (and columns likewise) of each pixel's quad, which the
    kernel treats as it treats the whole map (one window per quad), or on the whole map with
    fewer than 4 classes."""
    batch, classes, h, w = decided.shape
    if classes < 4:
        return upsample_logits(decided, size).max(dim=1).indices[b, y, x]  # reduced as the whole map is: same ties
    r0, c0 = quad_of(h, STRIDE * h, y.device)[y], quad_of(w, STRIDE * w, x.device)[x]
    quads, which = torch.unique((b * h + r0) * w + c0, return_inverse=True)  # one window per quad
    qb, qr, qc = quads // (h * w), quads // w % h, quads % w
    wh, ww = (qr + 2).clamp(max=h) - qr, (qc + 2).clamp(max=w) - qc  # 2 cells, 1 at the last
    labels = torch.empty_like(y)
    source = _channels_last(decided)
    for rows in (1, 2):
        for cols in (1, 2):
            pick = (wh == rows) & (ww == cols)
            if not pick.any():
                continue
            gr = qr[pick, None] + torch.arange(rows, device=y.device)
            gc = qc[pick, None] + torch.arange(cols, device=x.device)
            windows = source[qb[pick, None, None], :, gr[:, :, None], gc[:, None, :]]  # [n, rows, cols, K]
            up = F.interpolate(windows.permute(0, 3, 1, 2), size=(rows * STRIDE, cols * STRIDE), mode="bilinear",
                               align_corners=False)  # the permuted view is channels-last, as the whole map
            best = up.max(dim=1).indices  # reduced in the whole map's layout, so exact ties break alike
            slot = torch.full_like(quads, -1)
            slot[pick] = torch.arange(int(pick.sum()), device=y.device)
            mine = slot[which] >= 0
            labels[mine] = best[slot[which[mine]], y[mine] - STRIDE * r0[mine], x[mine] - STRIDE * c0[mine]]
    return labels
