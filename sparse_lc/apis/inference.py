"""Segmenting image files: what ``sparse-lc segment`` and ``sparse-lc demo`` run.

Each input gets three files in the output folder: ``NAME_label.png`` (palette PNG, class ids
as pixel values), ``NAME_overlay.jpg`` (label colours over the photo) and ``NAME_stages.png``
(which stage decided each pixel). A file that cannot be read is reported and skipped; the
others are still processed.

Nothing a user owns is written over. Every file segment writes carries a mark in its metadata
(a PNG text chunk, a JPEG comment: ``sparse-lc segment``), so segment knows its own outputs:

* an output path that holds a file without the mark (the user's ``cat_label.png``) is not
  replaced: that input is skipped with a message, unless ``overwrite`` is set; an input of the
  same run is never replaced, whatever ``overwrite`` says;
* files with the mark are never taken as inputs, so segmenting a folder into itself again
  gives the same result as the first time (its own outputs are replaced).
"""
from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import Deque, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import cv2
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..analysis import DenseMacs, count_macs
from ..cascade import LayerCascade, Rho
from ..data import DataError, read_photo, write_label
from ..errors import Interrupted, OutputError
from ..utils import prepare_images
from ..visualization import draw_stage_map, overlay
from .sliding_window import Tiling, segment_tiled, stage_map_pixels

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
OUTPUT_SUFFIXES = ("_label.png", "_overlay.jpg", "_stages.png")
MARK = "sparse-lc segment"  # in every output: PNG text chunk "Software", JPEG comment


@dataclass
class SegmentRecord:
    path: str
    ok: bool
    error: str = ""
    height: int = 0
    width: int = 0
    seconds: float = 0.0                 # one forward pass (after the run's warm-up pass), not file I/O
    stage_shares: Tuple[float, ...] = ()
    macs_cascade: int = 0
    macs_dense: int = 0
    outputs: List[str] = field(default_factory=list)

    def to_json(self) -> Dict:
        return asdict(self)


def is_segment_output(path: str) -> bool:
    """True if ``path`` is a picture ``segment`` wrote (it carries :data:`MARK`); reads the header only."""
    try:
        with Image.open(path) as im:
            mark = im.info.get("Software") or im.info.get("comment") or b""
    except (OSError, ValueError, Image.DecompressionBombError):
        return False
    return (mark.decode(errors="replace") if isinstance(mark, bytes) else str(mark)) == MARK


def _folder_images(folder: str) -> List[str]:
    """The image files of ``folder`` (sorted, not recursive; broken links included, to be
    reported), without this tool's own outputs."""
    names = sorted(f for f in os.listdir(folder)
                   if f.lower().endswith(IMAGE_SUFFIXES) and not os.path.isdir(os.path.join(folder, f)))
    return [os.path.join(folder, f) for f in names if not is_segment_output(os.path.join(folder, f))]


def collect_inputs(inputs: Sequence[str]) -> Tuple[List[str], List[SegmentRecord]]:
    """Expand folders (their image files, sorted; not recursive); inputs that cannot be used
    (missing, a broken or looping link, a folder without images) become failure records."""
    files, failed = [], []
    for path in inputs:
        if os.path.isdir(path):
            found = _folder_images(path)
            files += found
            if not found:
                failed.append(SegmentRecord(path, False, f"no image files in this folder "
                                                         f"({', '.join(IMAGE_SUFFIXES)})"))
        elif os.path.isfile(path) or os.path.islink(path):  # a broken link is reported when read
            files.append(path)
        else:
            failed.append(SegmentRecord(path, False, "no such file or folder"))
    return files, failed


def output_stems(files: Sequence[str], out_dir: str) -> Dict[str, str]:
    """A distinct output stem (path without suffix) per input: ``NAME``, or ``NAME-2`` when two
    inputs share a name."""
    stems, used = {}, set()
    for path in files:
        name = os.path.splitext(os.path.basename(path))[0]
        candidate, n = name, 1
        while candidate in used:
            n += 1
            candidate = f"{name}-{n}"
        used.add(candidate)
        stems[path] = os.path.join(out_dir, candidate)
    return stems


def prepare_output_folder(out_dir: str) -> None:
    """Create ``out_dir`` if needed; OutputError (one line) if it is a file or cannot be written."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise OutputError(f"--out {out_dir}: exists and is not a folder; name a folder")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise OutputError(f"--out {out_dir}: cannot create the folder ({e.strerror})") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise OutputError(f"--out {out_dir}: the folder is not writable")


def segment_array(model: LayerCascade, image: np.ndarray, rho: Optional[Rho], max_side: int,
                  dense_macs: DenseMacs, warm_up: bool = False, tiling: Optional[Tiling] = None,
                  execution: str = "sparse") -> Tuple[np.ndarray, np.ndarray, Tuple[float, ...], float, int, int]:
    """BGR uint8 ``[H, W, 3]`` -> (labels ``[H, W]``, stage map ``[H, W]``, shares, seconds,
    cascade MACs, dense MACs). Images whose longer side exceeds ``max_side`` run downscaled;
    the maps are resized back (nearest) to the image. ``max_side`` 0 is full resolution: an
    image larger than a tile of ``tiling`` then runs tile by tile (:mod:`.tiling`). ``warm_up``:
    run the image once untimed first, so that one-time set-up (allocations, spconv's first
    call) is not counted as its time."""
    height, width = image.shape[:2]
    if max_side == 0 and tiling is not None and tiling.applies(height, width):
        tiled = segment_tiled(model, image, rho, tiling.tile, tiling.stride, tiling.batch, execution)
        return (tiled.labels, stage_map_pixels(tiled.stage_map, (height, width)), tiled.stage_shares, tiled.seconds,
                tiled.macs_cascade, tiled.macs_dense)
    scale = min(1.0, max_side / max(height, width)) if max_side else 1.0
    small = image if scale == 1.0 else cv2.resize(
        image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    param = next(model.parameters())
    batch = prepare_images(small, model.pixel_mean, model.pixel_std, "bgr").to(param.device, param.dtype)
    with torch.no_grad():
        if warm_up:
            model(batch, rho=rho, execution=execution)
        start = time.perf_counter()
        result, macs = count_macs(model, batch, rho=rho, execution=execution)  # counting adds a few percent
        seconds = time.perf_counter() - start
    labels = result.labels[0].cpu().numpy().astype(np.uint8)
    stages = result.stage_map_at(small.shape[:2])[0].cpu().numpy()
    if scale != 1.0:
        labels = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
        stages = cv2.resize(stages, (width, height), interpolation=cv2.INTER_NEAREST)
    return labels, stages, result.stage_shares, seconds, macs.total(), dense_macs(*small.shape[:2])


def _blocked(outputs: Sequence[str], protected: Set[str], overwrite: bool) -> Optional[str]:
    """Why the outputs of one input may not be written, or None."""
    for out in outputs:
        if _real(out) in protected:
            return f"would overwrite an input of this run ({out}); choose another --out"
        if os.path.lexists(out) and not (os.path.isfile(out) and (overwrite or is_segment_output(out))):
            kind = "a folder" if os.path.isdir(out) else "a file"
            hint = "" if os.path.isdir(out) else " (--overwrite replaces it)"
            return f"skipped: {out} is {kind} not written by sparse-lc segment{hint}"
    return None


def _write_picture(path: str, bgr: np.ndarray) -> None:
    """A BGR picture as PNG or JPEG (by suffix), encoded by OpenCV, with :data:`MARK` in its
    metadata: a PNG ``tEXt`` chunk "Software" after the header, a JPEG comment after SOI."""
    ok, encoded = cv2.imencode(os.path.splitext(path)[1], bgr)
    if not ok:
        raise OSError(f"cannot encode {path}")
    data = encoded.tobytes()
    if path.endswith(".png"):
        text = b"Software\0" + MARK.encode()
        chunk = struct.pack(">I", len(text)) + b"tEXt" + text + struct.pack(">I", zlib.crc32(b"tEXt" + text))
        data = data[:33] + chunk + data[33:]  # 8-byte signature + 25-byte IHDR chunk
    else:
        comment = MARK.encode()
        data = data[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + data[2:]
    with open(path, "wb") as f:
        f.write(data)


def _write_outputs(outputs: Sequence[str], image: np.ndarray, labels: np.ndarray, stages: np.ndarray,
                   shares: Sequence[float], palette: np.ndarray) -> None:
    """The three pictures of one image: labels (palette PNG), overlay (JPEG), stages (PNG)."""
    write_label(outputs[0], labels, palette, mark=MARK)
    _write_picture(outputs[1], overlay(image, labels, palette))
    _write_picture(outputs[2], draw_stage_map(image, stages, shares))


def _failure(path: str, error: Exception) -> SegmentRecord:
    """A failed record; a DataError's message already names the file."""
    if isinstance(error, DataError):
        message = str(error)
        return SegmentRecord(path, False, message[len(path) + 2:] if message.startswith(path + ": ") else message)
    return SegmentRecord(path, False, " ".join(f"{type(error).__name__}: {error}".split())[:300])


def _real(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


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
                  batch_size: int = 1, workers: int = 2, execution: str = "sparse") -> List[SegmentRecord]:
    """Segment every image of ``inputs`` (files or folders) into ``out_dir``. One record per
    input, failures included (unusable inputs first): the batch never stops for one bad file.

    Files are read ahead and the pictures written on ``workers`` threads, so the model never
    waits on the disk. ``batch_size``: consecutive images of one size (after downscaling) go
    through the model together, up to this many; the MACs and time of a batch are shared out
    evenly among its images. ``warmup``: the first batch runs once untimed first (one extra
    pass per run). ``overwrite``: replace files at output paths that segment did not write
    (never this run's inputs). ``max_side`` 0: full resolution, images larger than a tile of
    ``tiling`` (default: :class:`Tiling`'s) cut into tiles, one image at a time.
    ``execution="dense"`` runs the same model dense (every stage on every pixel, rho = 1), for
    comparison. Raises OutputError when ``out_dir`` cannot be used, DataError when ``inputs`` hold no
    image at all, :class:`Interrupted` on Ctrl-C (saying how far it got).
    """
    if max_side < 0:
        raise ValueError(f"max_side must be >= 0 (0: no limit), got {max_side}")
    if batch_size < 1 or workers < 1:
        raise ValueError(f"batch_size and workers must be >= 1, got {batch_size} and {workers}")
    files, records = collect_inputs(inputs)
    if not files and not [r for r in records if "no image files" not in r.error]:
        raise DataError(f"{', '.join(inputs)}: no image files to segment (looked for {', '.join(IMAGE_SUFFIXES)})")
    prepare_output_folder(out_dir)
    stems = output_stems(files, out_dir)
    protected = {_real(p) for p in files}
    jobs: List[Tuple[str, List[str]]] = []  # (input, its outputs); a file given twice is two jobs
    for path in files:
        outputs = [stems[path] + suffix for suffix in OUTPUT_SUFFIXES]
        blocked = _blocked(outputs, protected, overwrite)
        if blocked:
            records.append(SegmentRecord(path, False, blocked))
        else:
            jobs.append((path, outputs))
    if execution == "dense":
        rho = 1.0
    run = _Segmenter(model, palette, rho, max_side, Tiling() if tiling is None else tiling, batch_size, warmup,
                     execution)
    bar = tqdm(total=len(jobs), desc="segment", unit="img", disable=not progress)
    try:
        with ThreadPoolExecutor(workers, initializer=_behind_the_model) as pool:
            for _, record in run.records(_prefetched(pool, [path for path, _ in jobs], depth=batch_size + 2 * workers),
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
                 batch_size: int, warmup: bool, execution: str):
        self.model, self.palette, self.rho, self.max_side = model, palette, rho, max_side
        self.tiling, self.batch_size, self.warm_up, self.execution = tiling, batch_size, warmup, execution
        self.dense_macs = DenseMacs(model)

    def records(self, images: Iterator[Tuple[int, str, object]], outputs: Sequence[List[str]],
                pool: ThreadPoolExecutor, depth: int) -> Iterator[Tuple[str, SegmentRecord]]:
        """One ``(path, record)`` per image, in order, once its pictures are written
        (``outputs[position]``: the files of the image at that position)."""
        writing: Deque = deque()
        for group in self._groups(images):
            for (position, path, _), (_, record, arrays) in zip(group, self._run([(p, i) for _, p, i in group])):
                mine = outputs[position]
                future = pool.submit(_write_outputs, mine, *arrays, self.palette) if record.ok else None
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
                return path, _failure(path, e)
        return path, record

    def _size(self, image: np.ndarray) -> Tuple[int, int]:
        """The size an image runs at (after downscaling); ``(0, 0)`` for an image cut into tiles."""
        height, width = image.shape[:2]
        if self.max_side == 0:
            return (0, 0) if self.tiling.applies(height, width) else (height, width)
        scale = min(1.0, self.max_side / max(height, width))
        return (height, width) if scale == 1.0 else (max(1, round(height * scale)), max(1, round(width * scale)))

    def _groups(self, images: Iterator[Tuple[int, str, object]]) -> Iterator[List[Tuple[int, str, object]]]:
        """Consecutive images of one running size, up to ``batch_size``; a failed read or an image
        cut into tiles alone."""
        group: List[Tuple[int, str, object]] = []
        for position, path, image in images:
            alone = not isinstance(image, np.ndarray) or self._size(image) == (0, 0)
            if group and (alone or len(group) == self.batch_size or self._size(image) != self._size(group[0][2])):
                yield group
                group = []
            group.append((position, path, image))
            if alone:
                yield group
                group = []
        if group:
            yield group

    def _run(self, group: List[Tuple[str, object]]):
        """``(path, record, (image, labels, stages, shares))`` per image of the group."""
        path, first = group[0]
        if not isinstance(first, np.ndarray):
            return [(path, _failure(path, first), None)]
        try:
            if len(group) == 1:
                out = segment_array(self.model, first, self.rho, self.max_side, self.dense_macs, self.warm_up,
                                    self.tiling, self.execution)
                self.warm_up = False
                return [self._record(path, first, *out)]
            return self._run_batch(group)
        except Exception as e:  # noqa: BLE001  (the images of this batch fail; the others go on)
            return [(p, _failure(p, e), None) for p, _ in group]

    def _run_batch(self, group: List[Tuple[str, np.ndarray]]):
        images = [image for _, image in group]
        height, width = images[0].shape[:2]
        small_h, small_w = self._size(images[0])
        small = [img if (small_h, small_w) == (height, width) else
                 cv2.resize(img, (small_w, small_h), interpolation=cv2.INTER_AREA) for img in images]
        param = next(self.model.parameters())
        batch = prepare_images(small, self.model.pixel_mean, self.model.pixel_std, "bgr").to(param.device, param.dtype)
        with torch.no_grad():
            if self.warm_up:
                self.model(batch, rho=self.rho, execution=self.execution)
                self.warm_up = False
            start = time.perf_counter()
            result, macs = count_macs(self.model, batch, rho=self.rho, execution=self.execution)
            seconds = (time.perf_counter() - start) / len(group)
        labels = result.labels.to(torch.uint8).cpu().numpy()
        stages = result.stage_map_at((small_h, small_w)).cpu().numpy()
        counts = result.stage_counts.double()
        shares = (counts / counts.sum(1, keepdim=True)).tolist()
        dense = self.dense_macs(small_h, small_w)
        out = []
        for i, (path, image) in enumerate(group):
            lab, stg = labels[i], stages[i]
            if (small_h, small_w) != (height, width):
                lab = cv2.resize(lab, (width, height), interpolation=cv2.INTER_NEAREST)
                stg = cv2.resize(stg, (width, height), interpolation=cv2.INTER_NEAREST)
            out.append(self._record(path, image, lab, stg, tuple(shares[i]), seconds, macs.total() // len(group),
                                    dense))
        return out

    @staticmethod
    def _record(path, image, labels, stages, shares, seconds, macs, dense):
        record = SegmentRecord(path, True, "", image.shape[0], image.shape[1], seconds, tuple(shares), int(macs),
                               int(dense))
        return path, record, (image, labels, stages, shares)
