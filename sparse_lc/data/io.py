"""Reading images and label maps, with one-line errors that name the file."""
from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
import warnings
from contextlib import contextmanager
from typing import Iterator, Optional

import cv2
import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from ..errors import DataError

__all__ = ["IMAGE_SUFFIXES", "DataError", "read_image", "read_label", "read_photo", "to_uint8", "write_label"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")  # the files read_image is given


def read_image(path: str) -> np.ndarray:
    """Any picture a user may have -> BGR uint8 ``[H, W, 3]``: what ``sparse-lc segment`` and every
    dataset read (one rule for both).

    8-bit, 16-bit or float images; gray, BGR or BGRA (alpha dropped); EXIF orientation applied;
    values mapped to 0-255 by :func:`to_uint8`. A file that cannot be decoded, or a truncated
    one, raises DataError naming it, with the decoder's own message; decoders' messages never
    reach the terminal.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: {_not_a_file(path)}")
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: an empty file")
    with _decoder_messages() as messages:
        image = cv2.imread(path, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    said = f" ({messages.text})" if messages.text else ""
    if image is None or image.size == 0:
        reason = _claimed_size(path) or "cannot decode image: not an image, or a format OpenCV cannot read"
        raise DataError(f"{path}: {reason}{said}")
    if "premature end" in messages.text.lower():
        raise DataError(f"{path}: truncated or corrupt image{said}")
    image = to_uint8(image)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] != 3:
        raise DataError(f"{path}: {image.shape[2]} channels; expected gray, BGR or BGRA")
    return image


read_photo = read_image  # the name segment has always used


MAX_PIXELS = 1 << 30  # OpenCV's limit (OPENCV_IO_MAX_IMAGE_PIXELS)


def _claimed_size(path: str) -> str:
    """Why a file OpenCV refused may have been refused: a header claiming too many pixels."""
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # read the header only, whatever it claims
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, ValueError):
        return ""
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if width * height > int(os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", MAX_PIXELS)):
        return f"its header claims {width}x{height} pixels, more than OpenCV reads"
    return ""


def _not_a_file(path: str) -> str:
    if os.path.isdir(path):
        return "a folder, not an image file"
    return "a broken or looping symbolic link" if os.path.islink(path) else "no such file"


def to_uint8(image: np.ndarray) -> np.ndarray:
    """The one rule for images deeper than 8 bits (segment and the dataset reader alike):

    * integers (16-bit, ...): scaled from the type's full range to 0-255 (``/ 257`` for 16
      bits), unless the image's maximum is below 1/16 of that range (12-bit data in a 16-bit
      file, a dim microscope frame): then scaled from ``[0, max]`` to 0-255, so the picture is
      not black. Zero stays zero.
    * floats: ``[0, 1]`` images (maximum <= 1) are multiplied by 255, others are taken as 0-255;
      clipped to 0-255, NaN read as 0.
    """
    if image.dtype == np.uint8:
        return image
    if np.issubdtype(image.dtype, np.integer):
        full = float(np.iinfo(image.dtype).max)
        top = float(image.max(initial=0))
        scale, over = (255.0 / top if 0 < top < full / 16 else 255.0 / full), False
    else:
        with warnings.catch_warnings():  # an all-NaN image: its maximum counts as 0
            warnings.simplefilter("ignore", RuntimeWarning)
            top = float(np.nan_to_num(np.nanmax(image), nan=0.0)) if image.size else 0.0
        scale, over = (255.0 if top <= 1.0 else 1.0), True
    out = np.empty(image.shape, np.uint8)
    for top_row in range(0, len(image), 256):  # float64 work in bands: a large 16-bit photo needs no 8-byte copy
        rows = slice(top_row, top_row + 256)
        values = image[rows].astype(np.float64)
        if over:
            values = np.nan_to_num(values, nan=0.0)
        out[rows] = np.clip(np.round(values * scale), 0, 255)
    return out


class _Messages:
    text = ""


_CAPTURE = threading.Lock()
_SINKS: dict = {}  # process id -> its temporary file for decoder messages (not shared across fork)


@contextmanager
def _decoder_messages() -> Iterator[_Messages]:
    """Catch what image decoders print to the process's stderr (libpng's "Read Error",
    libjpeg's "Premature end of JPEG file", OpenCV's log lines) instead of letting it reach the
    terminal and break progress bars; the text is given back for error messages. One thread at
    a time (stderr is one per process)."""
    messages = _Messages()
    with _CAPTURE:
        sink = _SINKS.get(os.getpid())
        if sink is None:
            sink = _SINKS[os.getpid()] = tempfile.TemporaryFile()
        sink.seek(0)
        sink.truncate()
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield messages
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            messages.text = _tidy(sink.read().decode(errors="replace"))


def _tidy(text: str) -> str:
    """Decoder output on one short line: OpenCV's log prefixes and source locations removed."""
    text = re.sub(r"\[\s*\w+:\d+@[\d.]+\]\s*global \S+\s*", "", text)  # [ERROR:0@0.05] global file.cpp:117
    text = re.sub(r"OpenCV\([^)]*\) \S+: error: \([^)]*\)\s*", "", text)  # OpenCV(5.0) /path.cpp:77: error: (-2:..)
    return " ".join(text.split())[:200]


def read_label(path: str) -> np.ndarray:
    """A class-id map ``[H, W]`` uint8 from a palette or single-channel PNG (pixel value = id)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L", "I", "I;16"):
                raise DataError(f"{path}: label must be a palette or single-channel image, got mode {im.mode}")
            label = np.array(im)
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: cannot decode label image ({e.__class__.__name__})") from None
    if label.max(initial=0) > 255:
        raise DataError(f"{path}: label values above 255 (max {int(label.max())})")
    return label.astype(np.uint8)


def write_label(path: str, label: np.ndarray, palette: np.ndarray, mark: Optional[str] = None) -> None:
    """Write ``label [H, W]`` (class ids) as a palette PNG; ``palette`` is ``[N, 3]`` RGB uint8;
    ``mark``, if given, goes into the PNG's "Software" text chunk."""
    image = Image.fromarray(label.astype(np.uint8), mode="P")
    flat = np.zeros((256, 3), np.uint8)
    flat[: len(palette)] = palette[:256]
    image.putpalette(flat.flatten().tolist())
    info = None
    if mark is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text("Software", mark)
    image.save(path, pnginfo=info)
