"""Pictures of a segmentation: coloured labels, overlays, and which stage decided each pixel."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

# BGR colours of stages 1, 2, 3 (the same blue / orange / red as the rho-sweep plot)
STAGE_COLOURS_BGR = np.array([[176, 114, 76], [82, 132, 221], [82, 78, 196]], np.uint8)


BAND = 256  # rows drawn at a time: a large picture never needs a second full-size temporary


def colorize(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """``[H, W]`` class ids -> ``[H, W, 3]`` BGR, with ``palette`` ``[K, 3]`` RGB uint8."""
    bgr = np.ascontiguousarray(palette[:, ::-1])
    return bgr[np.minimum(label, len(bgr) - 1)]


def overlay(image: np.ndarray, label: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The label colours blended over a BGR uint8 image (drawn band by band)."""
    canvas = np.empty_like(image)
    for rows in _bands(len(image)):
        canvas[rows] = cv2.addWeighted(image[rows], 1 - alpha, colorize(label[rows], palette), alpha, 0)
    return canvas


def draw_stage_map(image: np.ndarray, stage_map: np.ndarray, shares: Sequence[float], alpha: float = 0.6) -> np.ndarray:
    """Which stage (1, 2, 3) decided each pixel, over a grey copy of the image, with a legend
    giving each stage's share of pixels (drawn band by band)."""
    canvas = np.empty_like(image)
    for rows in _bands(len(image)):
        grey = cv2.cvtColor(cv2.cvtColor(image[rows], cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        colours = STAGE_COLOURS_BGR[np.clip(stage_map[rows], 1, 3) - 1]
        canvas[rows] = cv2.addWeighted(grey, 1 - alpha, colours, alpha, 0)
    _draw_legend(canvas, [f"stage {i + 1}: {100 * s:.1f}%" for i, s in enumerate(shares)])
    return canvas


def _bands(height: int):
    return [slice(top, min(top + BAND, height)) for top in range(0, height, BAND)]


def _draw_legend(canvas: np.ndarray, entries: Sequence[str]) -> None:
    """A legend (colour swatch + text per stage) on a dark box in the top-left corner, in place."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, float(np.clip(min(canvas.shape[:2]) / 500, 0.35, 1.2))
    (text_w, text_h), _ = cv2.getTextSize(max(entries, key=len), font, scale, 1)
    pad, line = max(3, text_h // 2), int(text_h * 1.8)
    box_w, box_h = pad * 3 + text_h + text_w, pad * 2 + line * len(entries)
    x0, y0 = 4, 4
    region = canvas[y0:y0 + box_h, x0:x0 + box_w]
    region[:] = (region * 0.35).astype(np.uint8)
    for i, text in enumerate(entries):
        top = y0 + pad + i * line
        cv2.rectangle(canvas, (x0 + pad, top + (line - text_h) // 2), (x0 + pad + text_h, top + (line + text_h) // 2),
                      STAGE_COLOURS_BGR[i].tolist(), -1)
        cv2.putText(canvas, text, (x0 + 2 * pad + text_h, top + (line + text_h) // 2), font, scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
