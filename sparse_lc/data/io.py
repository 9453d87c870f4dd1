"""Reading images and label maps, with one-line errors that name the file."""
from __future__ import annotations

import os

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError


class DataError(ValueError):
    """A data file that cannot be used; the message starts with its path."""


def read_image(path: str) -> np.ndarray:
    """A BGR uint8 ``[H, W, 3]`` image (OpenCV's layout). Gray images are expanded to 3 channels."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{path}: cannot decode image (unsupported or corrupt file)")
    return image


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
