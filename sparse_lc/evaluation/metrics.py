"""Segmentation metrics from a confusion matrix (mmsegmentation's definitions), and label boundaries."""
from __future__ import annotations

import math
from typing import Dict, Optional

import cv2
import numpy as np
import torch

from ..data import IGNORE_INDEX

BOUNDARY_RADIUS = 3


def boundary_mask(label: np.ndarray, radius: int = BOUNDARY_RADIUS) -> np.ndarray:
    """``[H, W]`` bool: pixels within ``radius`` of a change of label (255 counts as a label)."""
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(label, kernel) != cv2.erode(label, kernel)


def confusion_matrix(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[K, K]`` int64, rows = label, columns = prediction, over pixels whose label is not 255."""
    valid = label != IGNORE_INDEX
    index = label[valid] * num_classes + pred[valid]
    return torch.bincount(index, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def ratio(num: float, den: float) -> Optional[float]:
    return num / den if den > 0 else None


def metrics_from_confusion(conf: torch.Tensor) -> Dict:
    """mIoU, per-class IoU, pixel and mean accuracy of a ``[K, K]`` confusion matrix."""
    conf = conf.double()
    tp, gt, pred = conf.diag(), conf.sum(1), conf.sum(0)
    iou = [ratio(float(t), float(u)) for t, u in zip(tp, gt + pred - tp)]
    acc = [ratio(float(t), float(g)) for t, g in zip(tp, gt)]
    defined_iou = [v for v in iou if v is not None]
    defined_acc = [v for v in acc if v is not None]
    return {"miou": sum(defined_iou) / len(defined_iou) if defined_iou else math.nan,
            "per_class_iou": iou,
            "pixel_acc": float(tp.sum() / conf.sum()) if conf.sum() > 0 else math.nan,
            "mean_acc": sum(defined_acc) / len(defined_acc) if defined_acc else math.nan}
