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
import time
import zlib
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple

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
                  dense_macs: DenseMacs, warm_up: bool = False
                  ) -> Tuple[np.ndarray, np.ndarray, Tuple[float, ...], float, int, int]:
    """BGR uint8 ``[H, W, 3]`` -> (labels ``[H, W]``, stage map ``[H, W]``, shares, seconds,
    cascade MACs, dense MACs). Images whose longer side exceeds ``max_side`` (0: no limit) run
    downscaled; the maps are resized back (nearest) to the image. ``warm_up``: run the image
    once untimed first, so that one-time set-up (allocations, spconv's first call) is not
    counted as its time."""
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width)) if max_side else 1.0
    small = image if scale == 1.0 else cv2.resize(
        image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    param = next(model.parameters())
    batch = prepare_images(small, model.pixel_mean, model.pixel_std, "bgr").to(param.device, param.dtype)
    with torch.no_grad():
        if warm_up:
            model(batch, rho=rho)
        start = time.perf_counter()
        result, macs = count_macs(model, batch, rho=rho)  # counting adds a few percent to the time
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


def segment_file(model: LayerCascade, path: str, stem: str, palette: np.ndarray, rho: Optional[Rho],
                 max_side: int, dense_macs: DenseMacs, protected: Set[str], overwrite: bool = False,
                 warm_up: bool = False) -> SegmentRecord:
    """Segment one file and write its three pictures; any problem becomes a failed record
    (``protected``: real paths of this run's inputs, never written)."""
    outputs = [stem + suffix for suffix in OUTPUT_SUFFIXES]
    blocked = _blocked(outputs, protected, overwrite)
    if blocked:
        return SegmentRecord(path, False, blocked)
    try:
        image = read_photo(path)
        labels, stages, shares, seconds, macs, dense = segment_array(model, image, rho, max_side, dense_macs,
                                                                     warm_up)
        write_label(outputs[0], labels, palette, mark=MARK)
        _write_picture(outputs[1], overlay(image, labels, palette))
        _write_picture(outputs[2], draw_stage_map(image, stages, shares))
    except DataError as e:
        message = str(e)
        return SegmentRecord(path, False, message[len(path) + 2:] if message.startswith(path + ": ") else message)
    except Exception as e:  # noqa: BLE001  (one bad file must not stop the batch; the reason is reported)
        return SegmentRecord(path, False, " ".join(f"{type(e).__name__}: {e}".split())[:300])
    return SegmentRecord(path, True, "", image.shape[0], image.shape[1], seconds, tuple(shares), macs, dense, outputs)


def _real(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))


def segment_files(model: LayerCascade, inputs: Sequence[str], out_dir: str, palette: np.ndarray,
                  rho: Optional[Rho] = None, max_side: int = 1024, progress: bool = True,
                  warmup: bool = True, overwrite: bool = False) -> List[SegmentRecord]:
    """Segment every image of ``inputs`` (files or folders) into ``out_dir``. One record per
    input, failures included (unusable inputs first): the batch never stops for one bad file.

    ``warmup``: the first image runs once untimed first (one extra pass per run), so that
    one-time set-up is not counted in its time. ``overwrite``: replace files at output paths
    that segment did not write (never this run's inputs). Raises OutputError when ``out_dir``
    cannot be used, DataError when ``inputs`` hold no image at all, :class:`Interrupted` on
    Ctrl-C (saying how far it got).
    """
    if max_side < 0:
        raise ValueError(f"max_side must be >= 0 (0: no limit), got {max_side}")
    files, records = collect_inputs(inputs)
    if not files and not [r for r in records if "no image files" not in r.error]:
        raise DataError(f"{', '.join(inputs)}: no image files to segment (looked for {', '.join(IMAGE_SUFFIXES)})")
    prepare_output_folder(out_dir)
    stems = output_stems(files, out_dir)
    dense_macs = DenseMacs(model)
    protected = {_real(p) for p in files}
    done, warm_up = 0, warmup
    try:
        for path in tqdm(files, desc="segment", unit="img", disable=not progress):
            records.append(segment_file(model, path, stems[path], palette, rho, max_side, dense_macs, protected,
                                        overwrite, warm_up))
            warm_up = warm_up and not records[-1].ok  # one warm-up pass per run: on the first image that runs
            done += 1
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted after {done} of {len(files)} images; their outputs are in {out_dir}") from None
    return records
