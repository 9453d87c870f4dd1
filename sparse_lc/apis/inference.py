"""Segmenting image files: what ``sparse-lc segment`` and ``sparse-lc demo`` run.

Each input gets three files in the output folder: ``NAME_label.png`` (palette PNG, class ids
as pixel values), ``NAME_overlay.jpg`` (label colours over the photo) and ``NAME_stages.png``
(which stage decided each pixel). A file that cannot be read is reported and skipped; the
others are still processed.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from ..analysis import DenseMacs, count_macs
from ..cascade import LayerCascade, Rho
from ..data import DataError, read_photo, write_label
from ..utils import prepare_images
from ..visualization import draw_stage_map, overlay

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
OUTPUT_SUFFIXES = ("_label.png", "_overlay.jpg", "_stages.png")


@dataclass
class SegmentRecord:
    path: str
    ok: bool
    error: str = ""
    height: int = 0
    width: int = 0
    seconds: float = 0.0                 # one forward pass (after a warm-up at this size), not file I/O
    stage_shares: Tuple[float, ...] = ()
    macs_cascade: int = 0
    macs_dense: int = 0
    outputs: List[str] = field(default_factory=list)

    def to_json(self) -> Dict:
        return asdict(self)


def _folder_images(folder: str) -> List[str]:
    """The image files of ``folder`` (sorted, not recursive), without this tool's own outputs
    (``NAME_label.png`` etc. beside a ``NAME`` image), so a folder can be segmented into itself
    again."""
    names = sorted(f for f in os.listdir(folder)
                   if f.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(folder, f)))
    stems = {os.path.splitext(f)[0] for f in names}
    ours = {f for f in names for suffix in OUTPUT_SUFFIXES if f.endswith(suffix) and f[:-len(suffix)] in stems}
    return [os.path.join(folder, f) for f in names if f not in ours]


def collect_inputs(inputs: Sequence[str]) -> Tuple[List[str], List[SegmentRecord]]:
    """Expand folders (their image files, sorted; not recursive); paths that do not exist
    become failure records."""
    files, missing = [], []
    for path in inputs:
        if os.path.isdir(path):
            files += _folder_images(path)
        elif os.path.isfile(path):
            files.append(path)
        else:
            missing.append(SegmentRecord(path, False, "no such file or folder"))
    return files, missing


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


def segment_array(model: LayerCascade, image: np.ndarray, rho: Optional[Rho], max_side: int,
                  dense_macs: DenseMacs, warmed: Optional[Set[Tuple[int, int]]]
                  ) -> Tuple[np.ndarray, np.ndarray, Tuple[float, ...], float, int, int]:
    """BGR uint8 ``[H, W, 3]`` -> (labels ``[H, W]``, stage map ``[H, W]``, shares, seconds,
    cascade MACs, dense MACs). Images whose longer side exceeds ``max_side`` run downscaled;
    the maps are resized back (nearest) to the image. Unless ``warmed`` is None, the first image
    of each size is run once untimed first (``warmed`` remembers the sizes), so one-time set-up
    (allocations, oneDNN kernels for a new shape) is not counted as its time."""
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width)) if max_side else 1.0
    small = image if scale == 1.0 else cv2.resize(
        image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    param = next(model.parameters())
    batch = prepare_images(small, model.pixel_mean, model.pixel_std, "bgr").to(param.device, param.dtype)
    with torch.no_grad():
        if warmed is not None and small.shape[:2] not in warmed:
            model(batch, rho=rho)
            warmed.add(small.shape[:2])
        start = time.perf_counter()
        result, macs = count_macs(model, batch, rho=rho)  # counting adds a few percent to the time
        seconds = time.perf_counter() - start
    labels = result.labels[0].cpu().numpy().astype(np.uint8)
    stages = result.stage_map_at(small.shape[:2])[0].cpu().numpy()
    if scale != 1.0:
        labels = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
        stages = cv2.resize(stages, (width, height), interpolation=cv2.INTER_NEAREST)
    return labels, stages, result.stage_shares, seconds, macs.total(), dense_macs(*small.shape[:2])


def segment_file(model: LayerCascade, path: str, stem: str, palette: np.ndarray, rho: Optional[Rho],
                 max_side: int, dense_macs: DenseMacs, protected: Set[str],
                 warmed: Optional[Set[Tuple[int, int]]]) -> SegmentRecord:
    """Segment one file and write its three pictures; any problem becomes a failed record
    (``protected``: real paths of the inputs, never written)."""
    outputs = [stem + suffix for suffix in OUTPUT_SUFFIXES]
    clash = [p for p in outputs if _real(p) in protected]
    if clash:
        return SegmentRecord(path, False, f"would overwrite an input ({clash[0]}); choose another --out")
    try:
        image = read_photo(path)
        labels, stages, shares, seconds, macs, dense = segment_array(model, image, rho, max_side, dense_macs, warmed)
        write_label(outputs[0], labels, palette)
        for out, picture in ((outputs[1], overlay(image, labels, palette)),
                             (outputs[2], draw_stage_map(image, stages, shares))):
            if not cv2.imwrite(out, picture):
                raise OSError(f"cannot write {out}")
    except DataError as e:
        message = str(e)
        return SegmentRecord(path, False, message[len(path) + 2:] if message.startswith(path + ": ") else message)
    except Exception as e:  # one bad file must not stop the batch; the reason is reported
        return SegmentRecord(path, False, f"{type(e).__name__}: {e}".splitlines()[0])
    return SegmentRecord(path, True, "", image.shape[0], image.shape[1], seconds, tuple(shares), macs, dense, outputs)


def _real(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


def segment_files(model: LayerCascade, inputs: Sequence[str], out_dir: str, palette: np.ndarray,
                  rho: Optional[Rho] = None, max_side: int = 1024, progress: bool = True,
                  warmup: bool = True) -> List[SegmentRecord]:
    """Segment every image of ``inputs`` (files or folders) into ``out_dir``. One record per
    input, failures included (paths that do not exist first): the batch never stops for one
    bad file. ``warmup``: run each new image size once untimed first, for steady-state times
    (costs one extra pass per distinct size)."""
    files, records = collect_inputs(inputs)
    os.makedirs(out_dir, exist_ok=True)
    stems = output_stems(files, out_dir)
    dense_macs = DenseMacs(model)
    protected, warmed = {_real(p) for p in files}, (set() if warmup else None)
    for path in tqdm(files, desc="segment", unit="img", disable=not progress):
        records.append(segment_file(model, path, stems[path], palette, rho, max_side, dense_macs, protected, warmed))
    return records
