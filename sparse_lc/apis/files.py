"""The files of ``sparse-lc segment``: which inputs it reads, which outputs it writes, and
how it knows its own outputs.

Each input gets three files in the output folder: ``NAME_label.png`` (palette PNG, class ids
as pixel values), ``NAME_overlay.jpg`` (label colours over the photo, with a key of the
classes) and ``NAME_stages.png`` (which stage decided each pixel, with a key of the stages).

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
import zlib
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple

import cv2
import numpy as np
from PIL import Image

from ..data import IMAGE_SUFFIXES, DataError, write_label
from ..errors import OutputError
from ..visualization import draw_stage_map, overlay

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


def blocked_outputs(outputs: Sequence[str], protected: Set[str], overwrite: bool) -> Optional[str]:
    """Why the outputs of one input may not be written, or None."""
    for out in outputs:
        if real_path(out) in protected:
            return f"would overwrite an input of this run ({out}); choose another --out"
        if os.path.lexists(out) and not (os.path.isfile(out) and (overwrite or is_segment_output(out))):
            kind = "a folder" if os.path.isdir(out) else "a file"
            hint = "" if os.path.isdir(out) else " (--overwrite replaces it)"
            return f"skipped: {out} is {kind} not written by sparse-lc segment{hint}"
    return None


def write_picture(path: str, bgr: np.ndarray) -> None:
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


def write_outputs(outputs: Sequence[str], image: np.ndarray, labels: np.ndarray, stages: np.ndarray,
                  shares: Sequence[float], palette: np.ndarray, names: Sequence[str] = ()) -> None:
    """The three pictures of one image: labels (palette PNG), overlay (JPEG, with a key of the
    classes present when ``names`` are given), stages (PNG, with a key of the stages)."""
    write_label(outputs[0], labels, palette, mark=MARK)
    write_picture(outputs[1], overlay(image, labels, palette, names=names))
    write_picture(outputs[2], draw_stage_map(image, stages, shares))


def failure_record(path: str, error: Exception) -> SegmentRecord:
    """A failed record; a DataError's message already names the file."""
    if isinstance(error, DataError):
        message = str(error)
        return SegmentRecord(path, False, message[len(path) + 2:] if message.startswith(path + ": ") else message)
    return SegmentRecord(path, False, " ".join(f"{type(error).__name__}: {error}".split())[:300])


def real_path(path: str) -> str:
    return os.path.normcase(os.path.realpath(path))
