"""Segmenting images: what ``sparse-lc segment`` and ``sparse-lc demo`` run.

:func:`segment_array` segments one image, :func:`segment_same_size` a batch of images of one
size, :func:`segment_files` files and folders into an output folder (the files themselves:
:mod:`.files`). A file that cannot be read is reported and skipped; the others are still
processed.
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Deque, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..analysis import DenseMacs, count_macs
from ..assembly import spread_cells
from ..cascade import LayerCascade
from ..data import IMAGE_SUFFIXES, DataError, read_photo
from ..errors import Interrupted
from ..rho import Rho
from ..utils import prepare_images
from .files import (
    OUTPUT_SUFFIXES,
    SegmentRecord,
    blocked_outputs,
    collect_inputs,
    failure_record,
    output_stems,
    prepare_output_folder,
    real_path,
    write_outputs,
)
from .sliding_window import Tiling, segment_tiled

# labels [H, W], stage map [H, W], stage shares, seconds, cascade MACs, dense MACs
Segmented = Tuple[np.ndarray, np.ndarray, Tuple[float, ...], float, int, int]

DISPATCH_PIXELS = 1 << 22  # pixels per pass that amortise a pass's dispatch on CUDA (4.2 megapixels)
MAX_AUTO_BATCH = 16


def auto_batch(height: int, width: int, device: torch.device) -> int:
    """Images (or tiles) of ``height x width`` per pass when the batch is left to the library:
    1 on the CPU (one image keeps the cores busy; a batch only adds latency); on CUDA enough for
    about :data:`DISPATCH_PIXELS` pixels, at most :data:`MAX_AUTO_BATCH`, so that the fixed cost
    of dispatching a pass (hundreds of small kernels in the sparse stages) is shared by several
    images: 16 images of 512 x 512, 4 of 1024 x 1024, 2 of 1024 x 2048."""
    if torch.device(device).type != "cuda":
        return 1
    return max(1, min(MAX_AUTO_BATCH, DISPATCH_PIXELS // max(1, height * width)))


def running_size(height: int, width: int, max_side: int) -> Tuple[int, int]:
    """``(H, W)`` an image runs at: downscaled so that its longer side is at most ``max_side``
    (0: as it is)."""
    scale = min(1.0, max_side / max(height, width)) if max_side else 1.0
    return (height, width) if scale == 1.0 else (max(1, round(height * scale)), max(1, round(width * scale)))


def segment_array(model: LayerCascade, image: np.ndarray, rho: Optional[Rho], max_side: int,
                  dense_macs: DenseMacs, warm_up: bool = False, tiling: Optional[Tiling] = None,
                  execution: str = "sparse") -> Segmented:
    """BGR uint8 ``[H, W, 3]`` -> (labels ``[H, W]``, stage map ``[H, W]``, shares, seconds,
    cascade MACs, dense MACs). Images whose longer side exceeds ``max_side`` run downscaled;
    the maps are resized back (nearest) to the image. ``max_side`` 0 is full resolution: an
    image larger than a tile of ``tiling`` then runs tile by tile (:mod:`.sliding_window`).
    ``warm_up``: run the image once untimed first (tiled: one batch of tiles of each batch
    size), so that one-time set-up (allocations, spconv's first call) is not counted as its
    time."""
    height, width = image.shape[:2]
    if max_side == 0 and tiling is not None and tiling.applies(height, width):
        tiled = segment_tiled(model, image, rho, tiling.tile, tiling.stride, tiling.batch, execution,
                              dense_macs=dense_macs, warm_up=warm_up)
        stages = spread_cells(torch.from_numpy(tiled.stage_map), (height, width)).numpy()
        return tiled.labels, stages, tiled.stage_shares, tiled.seconds, tiled.macs_cascade, tiled.macs_dense
    return segment_same_size(model, [image], rho, max_side, dense_macs, warm_up, execution)[0]


def segment_same_size(model: LayerCascade, images: Sequence[np.ndarray], rho: Optional[Rho], max_side: int,
                      dense_macs: DenseMacs, warm_up: bool = False, execution: str = "sparse") -> List[Segmented]:
    """BGR uint8 images of one size ``[H, W, 3]``, run as one batch (downscaled as in
    :func:`segment_array`): one result per image as :func:`segment_array` gives it. The time
    and MACs of the batch are shared out evenly among its images."""
    height, width = images[0].shape[:2]
    small_h, small_w = running_size(height, width, max_side)
    small = [image if (small_h, small_w) == (height, width) else
             cv2.resize(image, (small_w, small_h), interpolation=cv2.INTER_AREA) for image in images]
    param = next(model.parameters())
    batch = prepare_images(small, model.pixel_mean, model.pixel_std, "bgr").to(param.device, param.dtype)
    with torch.no_grad():
        if warm_up:
            model(batch, rho=rho, execution=execution)
        start = time.perf_counter()
        result, macs = count_macs(model, batch, rho=rho, execution=execution)  # counting adds a few percent
        seconds = (time.perf_counter() - start) / len(images)
    labels = result.labels.to(torch.uint8).cpu().numpy()
    stages = result.stage_map_at((small_h, small_w)).cpu().numpy()
    counts = result.stage_counts.double()
    shares = (counts / counts.sum(1, keepdim=True)).tolist()
    dense = dense_macs(small_h, small_w)
    out = []
    for image_labels, image_stages, image_shares in zip(labels, stages, shares):
        if (small_h, small_w) != (height, width):
            image_labels = cv2.resize(image_labels, (width, height), interpolation=cv2.INTER_NEAREST)
            image_stages = cv2.resize(image_stages, (width, height), interpolation=cv2.INTER_NEAREST)
        out.append((image_labels, image_stages, tuple(image_shares), seconds, macs.total() // len(images), dense))
    return out


def _read(path: str):
    """The image at ``path``, or the exception reading it raised (the batch goes on)."""
    try:
        return read_photo(path)
    except Exception as e:  # noqa: BLE001  (reported in the file's record)
        return e


def _behind_the_model() -> None:
    """Run this I/O thread at the lowest priority (Linux: per thread), so it takes the cores the
    model leaves idle rather than stretching the model's time."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass


def _prefetched(pool: ThreadPoolExecutor, paths: Sequence[str], depth: int) -> Iterator[Tuple[int, str, object]]:
    """``(position, path, image or exception)`` in order, read ``depth`` files ahead on ``pool``."""
    queue: Deque = deque()
    ahead = iter(enumerate(paths))
    for position, path in ahead:
        queue.append((position, path, pool.submit(_read, path)))
        if len(queue) >= depth:
            break
    while queue:
        position, path, future = queue.popleft()
        for following, following_path in ahead:
            queue.append((following, following_path, pool.submit(_read, following_path)))
            break
        yield position, path, future.result()


def segment_files(model: LayerCascade, inputs: Sequence[str], out_dir: str, palette: np.ndarray,
                  rho: Optional[Rho] = None, max_side: int = 1024, progress: bool = True,
                  warmup: bool = True, overwrite: bool = False, tiling: Optional[Tiling] = None,
                  batch_size: Optional[int] = 1, workers: int = 2, execution: str = "sparse",
                  names: Sequence[str] = ()) -> List[SegmentRecord]:
    """Segment every image of ``inputs`` (files or folders) into ``out_dir``. One record per
    input, failures included (unusable inputs first): the batch never stops for one bad file.

    Files are read ahead and the pictures written on ``workers`` threads, so the model never
    waits on the disk. ``batch_size``: consecutive images of one size (after downscaling) go
    through the model together, up to this many (None: :func:`auto_batch` of their size); the
    MACs and time of a batch are shared out evenly among its images. ``warmup``: the first
    batch runs once untimed first (one extra pass per run). ``overwrite``: replace files at
    output paths that segment did not write (never this run's inputs). ``max_side`` 0: full
    resolution, images larger than a tile of ``tiling`` (default: :class:`Tiling`'s) cut into
    tiles, one image at a time.
    ``execution="dense"`` runs the same model dense (every stage on every pixel, rho = 1), for
    comparison. ``names``: the class names (:func:`~sparse_lc.apis.class_names_and_palette`),
    for the key of the classes on each overlay (none without). Raises OutputError when
    ``out_dir`` cannot be used, DataError when ``inputs`` hold no image at all,
    :class:`Interrupted` on Ctrl-C (saying how far it got).
    """
    if max_side < 0:
        raise ValueError(f"max_side must be >= 0 (0: no limit), got {max_side}")
    if (batch_size is not None and batch_size < 1) or workers < 1:
        raise ValueError(f"batch_size and workers must be >= 1, got {batch_size} and {workers}")
    files, records = collect_inputs(inputs)
    if not files and not [r for r in records if "no image files" not in r.error]:
        raise DataError(f"{', '.join(inputs)}: no image files to segment (looked for {', '.join(IMAGE_SUFFIXES)})")
    prepare_output_folder(out_dir)
    stems = output_stems(files, out_dir)
    protected = {real_path(p) for p in files}
    jobs: List[Tuple[str, List[str]]] = []  # (input, its outputs); a file given twice is two jobs
    for path in files:
        outputs = [stems[path] + suffix for suffix in OUTPUT_SUFFIXES]
        blocked = blocked_outputs(outputs, protected, overwrite)
        if blocked:
            records.append(SegmentRecord(path, False, blocked))
        else:
            jobs.append((path, outputs))
    if execution == "dense":
        rho = 1.0
    run = _Segmenter(model, palette, rho, max_side, Tiling() if tiling is None else tiling, batch_size, warmup,
                     execution, names)
    bar = tqdm(total=len(jobs), desc="segment", unit="img", disable=not progress)
    try:
        with ThreadPoolExecutor(workers, initializer=_behind_the_model) as pool:
            ahead = (batch_size or MAX_AUTO_BATCH) + 2 * workers
            for _, record in run.records(_prefetched(pool, [path for path, _ in jobs], depth=ahead),
                                            [outputs for _, outputs in jobs], pool, depth=2 * workers):
                records.append(record)
                bar.update(1)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted after {bar.n} of {len(jobs)} images; their outputs are in {out_dir}") from None
    finally:
        bar.close()
    return records


class _Segmenter:
    """Groups read images into batches, runs the model, hands the pictures to the writers."""

    def __init__(self, model: LayerCascade, palette: np.ndarray, rho: Optional[Rho], max_side: int, tiling: Tiling,
                 batch_size: Optional[int], warmup: bool, execution: str, names: Sequence[str]):
        self.model, self.palette, self.names, self.rho, self.max_side = model, palette, names, rho, max_side
        self.tiling, self.batch_size, self.warm_up, self.execution = tiling, batch_size, warmup, execution
        self.dense_macs = DenseMacs(model)

    def records(self, images: Iterator[Tuple[int, str, object]], outputs: Sequence[List[str]],
                pool: ThreadPoolExecutor, depth: int) -> Iterator[Tuple[str, SegmentRecord]]:
        """One ``(path, record)`` per image, in order, once its pictures are written
        (``outputs[position]``: the files of the image at that position)."""
        writing: Deque = deque()
        for group in self._groups(images):
            for (position, path, image), (record, arrays) in zip(group, self._run(group)):
                mine = outputs[position]
                future = (pool.submit(write_outputs, mine, image, *arrays, self.palette, self.names) if record.ok
                          else None)
                writing.append((path, replace(record, outputs=mine) if record.ok else record, future))
            while len(writing) > depth or (writing and writing[0][2] is None):
                yield self._finished(*writing.popleft())
        while writing:
            yield self._finished(*writing.popleft())

    @staticmethod
    def _finished(path: str, record: SegmentRecord, future) -> Tuple[str, SegmentRecord]:
        if future is not None:
            try:
                future.result()
            except Exception as e:  # noqa: BLE001  (a failed write fails that image only)
                return path, failure_record(path, e)
        return path, record

    def _size(self, image: np.ndarray) -> Tuple[int, int]:
        """The size an image runs at (after downscaling); ``(0, 0)`` for an image cut into tiles."""
        height, width = image.shape[:2]
        if self.max_side == 0 and self.tiling.applies(height, width):
            return (0, 0)
        return running_size(height, width, self.max_side)

    def _batch(self, image: np.ndarray) -> int:
        """Images per pass for images of this one's running size."""
        if self.batch_size is not None:
            return self.batch_size
        return auto_batch(*self._size(image), next(self.model.parameters()).device)

    def _groups(self, images: Iterator[Tuple[int, str, object]]) -> Iterator[List[Tuple[int, str, object]]]:
        """Consecutive images of one running size, up to ``batch_size``; a failed read or an image
        cut into tiles alone."""
        group: List[Tuple[int, str, object]] = []
        for position, path, image in images:
            alone = not isinstance(image, np.ndarray) or self._size(image) == (0, 0)
            if group and (alone or len(group) == self._batch(group[0][2]) or
                          self._size(image) != self._size(group[0][2])):
                yield group
                group = []
            group.append((position, path, image))
            if alone:
                yield group
                group = []
        if group:
            yield group

    def _run(self, group: List[Tuple[int, str, object]]) -> List[Tuple[SegmentRecord, Optional[tuple]]]:
        """``(record, (labels, stages, shares))`` per image of the group (None for a failure)."""
        _, path, first = group[0]
        if not isinstance(first, np.ndarray):
            return [(failure_record(path, first), None)]
        try:
            if len(group) == 1:
                results = [segment_array(self.model, first, self.rho, self.max_side, self.dense_macs, self.warm_up,
                                         self.tiling, self.execution)]
            else:
                results = segment_same_size(self.model, [image for _, _, image in group], self.rho, self.max_side,
                                            self.dense_macs, self.warm_up, self.execution)
        except Exception as e:  # noqa: BLE001  (the images of this batch fail; the others go on)
            return [(failure_record(p, e), None) for _, p, _ in group]
        self.warm_up = False
        return [(SegmentRecord(path, True, "", image.shape[0], image.shape[1], seconds, tuple(shares), int(macs),
                               int(dense)), (labels, stages, shares))
                for (_, path, image), (labels, stages, shares, seconds, macs, dense) in zip(group, results)]
