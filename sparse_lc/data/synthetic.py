"""Generated images: reproducible pictures of shapes, for demos and tests (no files needed)."""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np


def make_shapes_image(size: Tuple[int, int] = (512, 512), seed: int = 0, num_shapes: int = 12) -> np.ndarray:
    """A BGR uint8 ``[H, W, 3]`` picture: a soft gradient background with filled circles,
    rectangles and triangles of random colours, plus mild noise. Deterministic by ``seed``."""
    height, width = size
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, size=3)
    slope = rng.uniform(-60, 60, size=(2, 3))
    image = base + (ys[..., None] / height) * slope[0] + (xs[..., None] / width) * slope[1]
    image = np.clip(image, 0, 255).astype(np.uint8)
    scale = min(height, width)
    for _ in range(num_shapes):
        color = tuple(int(c) for c in rng.integers(0, 256, size=3))
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.uniform(0.05, 0.2) * scale)
        kind = rng.integers(0, 3)
        if kind == 0:
            cv2.circle(image, (cx, cy), r, color, thickness=-1)
        elif kind == 1:
            cv2.rectangle(image, (cx - r, cy - r // 2), (cx + r, cy + r // 2), color, thickness=-1)
        else:
            pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
            cv2.fillPoly(image, [pts], color)
    noise = rng.normal(0, 4, size=image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)
