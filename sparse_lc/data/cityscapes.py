"""Cityscapes fine annotations, mapped to the 19 training ids in code."""
from __future__ import annotations

import glob
import os
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from .dataset import Sample, SegDataset, dataset_seed, register_dataset
from .io import DataError, read_label
from .palettes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

# labelIds -> trainIds (cityscapesScripts' labels.py); every other id is ignored (255).
_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
              25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
LABEL_ID_TO_TRAIN_ID = np.full(256, 255, np.uint8)
for _label_id, _train_id in _TRAIN_IDS.items():
    LABEL_ID_TO_TRAIN_ID[_label_id] = _train_id


def cityscapes_samples(root: str, split: str) -> List[Sample]:
    """``leftImg8bit/SPLIT/CITY/X_leftImg8bit.png`` with ``gtFine/SPLIT/CITY/X_gtFine_labelTrainIds.png``
    when present, else ``X_gtFine_labelIds.png`` (mapped on load)."""
    image_dir = os.path.join(root, "leftImg8bit", split)
    if not os.path.isdir(image_dir):
        raise DataError(f"{image_dir}: not found (expected a Cityscapes root with leftImg8bit/{split})")
    samples = []
    for image in sorted(glob.glob(os.path.join(image_dir, "*", "*_leftImg8bit.png"))):
        city = os.path.basename(os.path.dirname(image))
        stem = os.path.basename(image)[: -len("_leftImg8bit.png")]
        base = os.path.join(root, "gtFine", split, city, f"{stem}_gtFine_")
        train_ids = base + "labelTrainIds.png"
        samples.append((image, train_ids if os.path.isfile(train_ids) else base + "labelIds.png"))
    return samples


class CityscapesDataset(SegDataset):
    classes = CITYSCAPES_CLASSES
    palette = CITYSCAPES_PALETTE

    def __init__(self, root: str, split: str = "train", transform: Optional[Callable] = None, seed: int = 0):
        super().__init__(cityscapes_samples(root, split), transform, seed)

    def load_label(self, index: int) -> np.ndarray:
        path = self.samples[index][1]
        label = read_label(path)
        return label if path.endswith("_labelTrainIds.png") else LABEL_ID_TO_TRAIN_ID[label]


@register_dataset("cityscapes", classes=CITYSCAPES_CLASSES, palette=CITYSCAPES_PALETTE)
def build_cityscapes(cfg: Dict[str, Any], split: str, train: bool,
                     transform: Optional[Callable]) -> CityscapesDataset:
    return CityscapesDataset(cfg["data"]["root"], split, transform, dataset_seed(cfg))
