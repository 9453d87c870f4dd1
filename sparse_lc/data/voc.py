"""PASCAL VOC 2012 (and the 10,582-image SegmentationClassAug set)."""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional

from .dataset import Sample, SegDataset, dataset_seed, register_dataset
from .io import DataError
from .palettes import VOC_CLASSES, voc_palette


def voc_root(root: str) -> str:
    """Accept ``.../VOCdevkit/VOC2012``, ``.../VOCdevkit`` or a folder that holds ``VOCdevkit``."""
    for candidate in (root, os.path.join(root, "VOC2012"), os.path.join(root, "VOCdevkit", "VOC2012")):
        if os.path.isdir(os.path.join(candidate, "JPEGImages")):
            return candidate
    raise DataError(f"{root}: not a VOC 2012 folder (expected VOCdevkit/VOC2012/JPEGImages)")


def read_id_list(path: str) -> List[str]:
    """Image ids, one per line (the first word of the line: aug lists may hold two paths)."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: split list not found")
    with open(path, encoding="utf-8") as f:
        ids = [line.split()[0] for line in f if line.strip()]
    return [os.path.splitext(os.path.basename(i))[0] for i in ids]


def voc_samples(root: str, split: str, aug: bool = False,
                aug_list: str = "ImageSets/Segmentation/train_aug.txt") -> List[Sample]:
    """``(JPEGImages/ID.jpg, SegmentationClass[Aug]/ID.png)`` for the ids of the split.

    With ``aug`` (training only) the labels come from ``SegmentationClassAug`` and the ids from
    ``aug_list`` (relative to the VOC2012 folder).
    """
    root = voc_root(root)
    if aug:
        ids, label_dir = read_id_list(os.path.join(root, aug_list)), "SegmentationClassAug"
    else:
        ids = read_id_list(os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt"))
        label_dir = "SegmentationClass"
    return [(os.path.join(root, "JPEGImages", f"{i}.jpg"), os.path.join(root, label_dir, f"{i}.png"))
            for i in ids]


class VOCDataset(SegDataset):
    classes = VOC_CLASSES
    palette = voc_palette(len(VOC_CLASSES))

    def __init__(self, root: str, split: str = "train", aug: bool = False,
                 aug_list: str = "ImageSets/Segmentation/train_aug.txt",
                 transform: Optional[Callable] = None, seed: int = 0):
        super().__init__(voc_samples(root, split, aug, aug_list), transform, seed)


@register_dataset("voc", classes=VOC_CLASSES, palette=voc_palette(len(VOC_CLASSES)))
def build_voc(cfg: Dict[str, Any], split: str, train: bool, transform: Optional[Callable]) -> VOCDataset:
    """``data.root``; with ``data.voc_aug`` the training set is SegmentationClassAug."""
    data = cfg["data"]
    return VOCDataset(data["root"], split, data["voc_aug"] and train, data["voc_aug_list"], transform,
                      dataset_seed(cfg))
