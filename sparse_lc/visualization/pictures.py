"""Pictures of a segmentation: coloured labels, overlays, and which stage decided each pixel."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

# BGR colours of stages 1, 2, 3 (the same blue / orange / red as the rho-sweep plot)
STAGE_COLOURS_BGR = np.array([[176, 114, 76], [82, 132, 221], [82, 78, 196]], np.uint8)


BAND = 256  # rows drawn at a time: a large picture never needs a second full-size temporary
KEY_CLASSES = 10  # classes an overlay's key names at most


def colorize(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """``[H, W]`` class ids -> ``[H, W, 3]`` BGR, with ``palette`` ``[K, 3]`` RGB uint8."""
    bgr = np.ascontiguousarray(palette[:, ::-1])
    return bgr[np.minimum(label, len(bgr) - 1)]


def overlay(image: np.ndarray, label: np.ndarray, palette: np.ndarray, alpha: float = 0.5,
            names: Sequence[str] = ()) -> np.ndarray:
    """The label colours blended over a BGR uint8 image (drawn band by band). With class
    ``names``, a key in the top-left corner names the classes present, most pixels first (at
    most :data:`KEY_CLASSES`)."""
    canvas = np.empty_like(image)
    pixels = np.zeros(len(palette), np.int64)
    for rows in _bands(len(image)):
        canvas[rows] = cv2.addWeighted(image[rows], 1 - alpha, colorize(label[rows], palette), alpha, 0)
        pixels += np.bincount(np.minimum(label[rows], len(palette) - 1).ravel(), minlength=len(palette))
    if len(names):
        _draw_legend(canvas, _class_key(pixels, names, palette))
    return canvas


def _class_key(pixels: np.ndarray, names: Sequence[str], palette: np.ndarray) -> List[Tuple[str, Sequence[int]]]:
    """``(text, BGR colour)`` of the classes with pixels, most first; the rest counted in a last line."""
    present = [int(k) for k in np.argsort(-pixels, kind="stable") if pixels[k] > 0]
    entries = [(names[k] if k < len(names) else f"class {k}", palette[k][::-1].tolist())
               for k in present[:KEY_CLASSES]]
    if len(present) > KEY_CLASSES:
        entries.append((f"+ {len(present) - KEY_CLASSES} more", None))
    return entries


def draw_stage_map(image: np.ndarray, stage_map: np.ndarray, shares: Sequence[float], alpha: float = 0.6) -> np.ndarray:
    """Which stage (1, 2, 3) decided each pixel, over a grey copy of the image, with a key
    giving each stage's colour and share of pixels (drawn band by band)."""
    canvas = np.empty_like(image)
    for rows in _bands(len(image)):
        grey = cv2.cvtColor(cv2.cvtColor(image[rows], cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        colours = STAGE_COLOURS_BGR[np.clip(stage_map[rows], 1, 3) - 1]
        canvas[rows] = cv2.addWeighted(grey, 1 - alpha, colours, alpha, 0)
    _draw_legend(canvas, [(f"stage {i + 1}: {100 * s:.1f}%", STAGE_COLOURS_BGR[i].tolist())
                          for i, s in enumerate(shares)])
    return canvas


def _bands(height: int):
    return [slice(top, min(top + BAND, height)) for top in range(0, height, BAND)]


def _draw_legend(canvas: np.ndarray, entries: Sequence[Tuple[str, Optional[Sequence[int]]]]) -> None:
    """A key (a colour swatch, or none, and a text per entry) on a darkened box in the top-left
    corner, in place; its size follows the picture's (clipped to the picture)."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, float(np.clip(min(canvas.shape[:2]) / 500, 0.35, 1.2))
    (text_w, text_h), _ = cv2.getTextSize(max((text for text, _ in entries), key=len), font, scale, 1)
    pad, line = max(3, text_h // 2), int(text_h * 1.8)
    box_w, box_h = pad * 3 + text_h + text_w, pad * 2 + line * len(entries)
    x0, y0 = 4, 4
    region = canvas[y0:y0 + box_h, x0:x0 + box_w]
    region[:] = (region * 0.35).astype(np.uint8)
    for i, (text, colour) in enumerate(entries):
        top = y0 + pad + i * line
        if colour is not None:  # a swatch, outlined so that a dark colour shows on the dark box
            corners = (x0 + pad, top + (line - text_h) // 2), (x0 + pad + text_h, top + (line + text_h) // 2)
            cv2.rectangle(canvas, *corners, [int(c) for c in colour], -1)
            cv2.rectangle(canvas, *corners, (200, 200, 200), 1)
        cv2.putText(canvas, text, (x0 + 2 * pad + text_h, top + (line + text_h) // 2), font, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
