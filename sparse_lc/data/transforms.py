"""Training and evaluation transforms with OpenCV (labels always resized nearest-neighbour).

Every transform takes ``(image [H, W, 3] uint8 BGR, label [H, W] uint8, rng)`` and returns the
pair. Randomness comes only from the ``numpy.random.Generator`` passed in, so a sample's
augmentation is a function of its seed: training resumes exactly.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

IGNORE_INDEX = 255


def random_scale(image: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                 scale_range: Tuple[float, float]) -> Tuple[np.ndarray, np.ndarray]:
    """Resize both by one factor drawn uniformly from ``scale_range``."""
    factor = rng.uniform(*scale_range)
    height, width = label.shape
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return (cv2.resize(image, size, interpolation=cv2.INTER_LINEAR),
            cv2.resize(label, size, interpolation=cv2.INTER_NEAREST))


def pad_to(image: np.ndarray, label: np.ndarray, size: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """Pad bottom/right up to at least ``size = (H, W)``: image with 0, label with ignore (255)."""
    pad_h, pad_w = max(size[0] - label.shape[0], 0), max(size[1] - label.shape[1], 0)
    if pad_h == 0 and pad_w == 0:
        return image, label
    image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    label = cv2.copyMakeBorder(label, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=IGNORE_INDEX)
    return image, label


def random_crop(image: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                size: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """Pad if needed, then cut a random ``size = (H, W)`` window."""
    image, label = pad_to(image, label, size)
    top = int(rng.integers(0, label.shape[0] - size[0] + 1))
    left = int(rng.integers(0, label.shape[1] - size[1] + 1))
    window = (slice(top, top + size[0]), slice(left, left + size[1]))
    return image[window], label[window]


def random_flip(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Mirror left-right with probability 1/2."""
    if rng.random() < 0.5:
        return image[:, ::-1], label[:, ::-1]
    return image, label


def to_tensors(image: np.ndarray, label: np.ndarray, mean: Sequence[float],
               std: Sequence[float]) -> Tuple[torch.Tensor, torch.Tensor]:
    """BGR uint8 ``[H, W, 3]`` -> normalised RGB float ``[3, H, W]``; label -> int64 ``[H, W]``."""
    rgb = np.ascontiguousarray(image[:, :, ::-1], dtype=np.float32)
    rgb = (rgb - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(rgb.transpose(2, 0, 1).copy()), torch.from_numpy(label.astype(np.int64))


class TrainTransform:
    """random scale -> random crop (padding with ignore) -> random flip -> normalise."""

    def __init__(self, crop_size: Tuple[int, int], scale_range: Tuple[float, float],
                 mean: Sequence[float], std: Sequence[float], flip: bool = True):
        self.crop_size = tuple(crop_size)
        self.scale_range = tuple(scale_range)
        self.mean, self.std, self.flip = mean, std, flip

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        image, label = random_scale(image, label, rng, self.scale_range)
        image, label = random_crop(image, label, rng, self.crop_size)
        if self.flip:
            image, label = random_flip(image, label, rng)
        return to_tensors(image, label, self.mean, self.std)


class EvalTransform:
    """Normalise only: evaluation runs on whole images at their own size."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean, self.std = mean, std

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        return to_tensors(image, label, self.mean, self.std)


def labels_on_grid(labels: torch.Tensor, stride: int = 8) -> torch.Tensor:
    """``[B, H, W]`` labels -> ``[B, h, w]`` on the feature grid (h = ceil(H / stride)): the label
    at the centre of each cell, as DeepLab shrinks labels; padding is ignored (255)."""
    height, width = labels.shape[1:]
    pad_h, pad_w = -height % stride, -width % stride
    padded = F.pad(labels, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
    return padded[:, stride // 2::stride, stride // 2::stride]
