"""A procedural dataset where depth matters, deterministic by seed (no files needed).

Each scene is a grey, softly shaded background with a few objects of five classes:

====  ===========  =====================================================================
 id   class        what tells it apart
====  ===========  =====================================================================
 0    background   colour: grey, unsaturated (easy almost everywhere)
 1    disk         **shape only**: disks, squares and triangles share one colour
 2    square       distribution (saturated, any hue but red) and are flat inside, so
 3    triangle     their interiors look the same up close; only the outline, seen over
                   a large area, tells them apart: these pixels need stages 2-3
 4    stripes      texture: two-colour stripes, visible in any small window (easy)
 5    red blob     colour: saturated red, used by no other class (easy)
====  ===========  =====================================================================

Easy interiors are decided by stage 1; object boundaries and the insides of the shape-coded
classes stay hard. A scene is a pure function of ``(scene_seed, split, index)``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

import cv2
import numpy as np

from .dataset import SegDataset, dataset_seed, register_dataset

SYNTHETIC_CLASSES = ("background", "disk", "square", "triangle", "stripes", "red blob")
SYNTHETIC_PALETTE = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25],
                              [0, 130, 200], [245, 130, 48]], np.uint8)
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2, "calib": 3}
_CLASS_WEIGHTS = np.array([0.0, 0.22, 0.22, 0.22, 0.17, 0.17])  # how often each object class is drawn


def _saturated_bgr(rng: np.random.Generator, hue_range: Tuple[int, int]) -> Tuple[int, int, int]:
    hsv = np.array([[[rng.integers(*hue_range), rng.integers(150, 256), rng.integers(150, 256)]]], np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def _object_colour(rng: np.random.Generator) -> Tuple[int, int, int]:
    """Any saturated hue except red (OpenCV hue 0-180; red is near 0 and 180)."""
    return _saturated_bgr(rng, (20, 160))


def _outline(kind: int, rng: np.random.Generator, center: Tuple[int, int], radius: int,
             shape: Tuple[int, int]) -> np.ndarray:
    """A filled mask ``[H, W]`` (uint8 0/1) of one object of class ``kind``."""
    mask = np.zeros(shape, np.uint8)
    angle = rng.uniform(0, 360)
    if kind == 1:
        cv2.circle(mask, center, radius, 1, thickness=-1)
    elif kind == 2:
        side = radius * 1.6
        box = cv2.boxPoints(((float(center[0]), float(center[1])), (side, side), angle))
        cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
    elif kind == 3:
        corners = np.deg2rad(angle + np.array([0, 120, 240]))
        pts = np.stack([center[0] + 1.25 * radius * np.cos(corners), center[1] + 1.25 * radius * np.sin(corners)], 1)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    else:  # stripes and red blobs: ellipses
        axes = (radius, max(4, int(radius * rng.uniform(0.5, 1.0))))
        cv2.ellipse(mask, center, axes, angle, 0, 360, 1, thickness=-1)
    return mask


def _fill(kind: int, rng: np.random.Generator, shape: Tuple[int, int]) -> np.ndarray:
    """The ``[H, W, 3]`` float appearance of class ``kind`` over the whole canvas."""
    height, width = shape
    if kind == 4:  # stripes of two colours at a random angle, period 6-10 px
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        theta, period = rng.uniform(0, np.pi), rng.uniform(6, 10)
        phase = (xs * np.cos(theta) + ys * np.sin(theta)) / period
        on = (np.floor(phase) % 2 == 0)[..., None]
        return np.where(on, _object_colour(rng), _object_colour(rng)).astype(np.float32)
    colour = _saturated_bgr(rng, (0, 6)) if kind == 5 else _object_colour(rng)
    return np.broadcast_to(np.array(colour, np.float32), (height, width, 3))


def render_scene(rng: np.random.Generator, size: Tuple[int, int] = (128, 128),
                 num_objects: Tuple[int, int] = (2, 5),
                 radius_range: Tuple[float, float] = (0.14, 0.30)) -> Tuple[np.ndarray, np.ndarray]:
    """One scene: BGR uint8 ``[H, W, 3]`` and class ids uint8 ``[H, W]``. Between
    ``num_objects[0]`` and ``num_objects[1] - 1`` objects, each of radius ``radius_range``
    times the image's shorter side."""
    height, width = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    grey = rng.uniform(70, 190) + rng.uniform(-8, 8, size=3)
    slope = rng.uniform(-35, 35, size=2)
    image = grey + (slope[0] * ys / height + slope[1] * xs / width)[..., None]
    label = np.zeros(size, np.uint8)
    scale = min(height, width)
    for _ in range(int(rng.integers(*num_objects))):
        kind = int(rng.choice(len(_CLASS_WEIGHTS), p=_CLASS_WEIGHTS))
        radius = int(rng.uniform(*radius_range) * scale)
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        mask = _outline(kind, rng, center, radius, size).astype(bool)
        image[mask] = _fill(kind, rng, size)[mask]
        label[mask] = kind
    image += rng.normal(0, 5, size=image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), label


class SyntheticShapes(SegDataset):
    """``num_images`` generated scenes of ``size``; ``split`` picks an independent stream."""

    classes = SYNTHETIC_CLASSES
    palette = SYNTHETIC_PALETTE

    def __init__(self, split: str = "train", num_images: int = 512, size: Tuple[int, int] = (128, 128),
                 transform: Optional[Callable] = None, seed: int = 0, num_objects: Tuple[int, int] = (2, 5),
                 radius_range: Tuple[float, float] = (0.14, 0.30), scene_seed: int = 0):
        if split not in _SPLIT_IDS:
            raise ValueError(f"synthetic split must be one of {sorted(_SPLIT_IDS)}, got {split!r}")
        super().__init__([], transform, seed)
        self.split, self.num_images, self.size = split, num_images, tuple(size)
        self.num_objects, self.radius_range = tuple(num_objects), tuple(radius_range)
        self.scene_seed = scene_seed  # which scenes; ``seed`` (the base class's) drives augmentation

    def __len__(self) -> int:
        return self.num_images

    def name(self, index: int) -> str:
        return f"synthetic_{self.split}_{index:05d}"

    def load(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng((self.scene_seed, _SPLIT_IDS[self.split], index))
        return render_scene(rng, self.size, self.num_objects, self.radius_range)


@register_dataset("synthetic", needs_root=False, classes=SYNTHETIC_CLASSES, palette=SYNTHETIC_PALETTE)
def build_synthetic(cfg: Dict[str, Any], split: str, train: bool, transform: Optional[Callable]) -> SyntheticShapes:
    """``data.synthetic`` scenes; the ``train`` and ``calib`` splits have their own counts, any other
    split ``num_val``."""
    syn = cfg["data"]["synthetic"]
    count = {"train": syn["num_train"], "calib": syn["num_calib"]}.get(split, syn["num_val"])
    return SyntheticShapes(split, count, tuple(syn["size"]), transform, seed=dataset_seed(cfg),
                           num_objects=tuple(syn["num_objects"]), radius_range=tuple(syn["radius_range"]),
                           scene_seed=syn["seed"])
