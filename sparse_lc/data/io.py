"""Reading images and label maps, with one-line errors that name the file."""
from __future__ import annotations

import os

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

__all__ = ["DataError", "read_image", "read_label", "read_photo", "write_label"]


def read_image(path: str) -> np.ndarray:
    """A BGR uint8 ``[H, W, 3]`` image (OpenCV's layout). Gray images are expanded to 3 channels."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{path}: cannot decode image (unsupported or corrupt file)")
    return image


def read_photo(path: str) -> np.ndarray:
    """Any picture a user may have -> BGR uint8 ``[H, W, 3]``.

    8-bit, 16-bit or float images; gray, BGR or BGRA (alpha dropped); EXIF orientation applied.
    16-bit values are scaled by 1/257 (full range to full range), floats in [0, 1] by 255.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    image = cv2.imread(path, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if image is None or image.size == 0:
        raise DataError(f"{path}: cannot decode image (not an image, or a format OpenCV cannot read)")
    image = _to_uint8(image)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] != 3:
        raise DataError(f"{path}: {image.shape[2]} channels; expected gray, BGR or BGRA")
    return image


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return np.round(image / 257.0).astype(np.uint8)
    values = image.astype(np.float64)
    if np.issubdtype(image.dtype, np.floating) and np.nanmax(values) <= 1.0:
        values = values * 255.0
    return np.clip(np.nan_to_num(values), 0, 255).round().astype(np.uint8)


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


def write_label(path: str, label: np.ndarray, palette: np.ndarray) -> None:
    """Write ``label [H, W]`` (class ids) as a palette PNG; ``palette`` is ``[N, 3]`` RGB uint8."""
    image = Image.fromarray(label.astype(np.uint8), mode="P")
    flat = np.zeros((256, 3), np.uint8)
    flat[: len(palette)] = palette[:256]
    image.putpalette(flat.flatten().tolist())
    image.save(path)
