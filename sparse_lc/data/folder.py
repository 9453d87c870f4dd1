"""mmsegmentation's custom layout: ``ROOT/img_dir/SPLIT/NAME.{jpg,png}``, ``ROOT/ann_dir/SPLIT/NAME.png``."""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .dataset import Sample, SegDataset, dataset_seed, register_dataset
from .io import IMAGE_SUFFIXES, DataError
from .palettes import voc_palette


def folder_pairs(root: str, split: str) -> List[Sample]:
    """Every image of ``img_dir/SPLIT`` with its ``ann_dir/SPLIT/NAME.png`` (which may be missing:
    the dataset refuses that, ``check-data`` reports it)."""
    image_dir = os.path.join(root, "img_dir", split)
    if not os.path.isdir(image_dir):
        raise DataError(f"{image_dir}: not found (expected ROOT/img_dir/{split} and ROOT/ann_dir/{split})")
    names = sorted(f for f in os.listdir(image_dir) if f.lower().endswith(IMAGE_SUFFIXES))
    return [(os.path.join(image_dir, f), os.path.join(root, "ann_dir", split, os.path.splitext(f)[0] + ".png"))
            for f in names]


class FolderDataset(SegDataset):
    """``classes`` (names) come from the config; ``palette`` too, else VOC's colour map."""

    def __init__(self, root: str, split: str, classes: Sequence[str],
                 palette: Optional[Sequence[Sequence[int]]] = None,
                 transform: Optional[Callable] = None, seed: int = 0):
        super().__init__(folder_pairs(root, split), transform, seed)
        self.label_dir = os.path.join(root, "ann_dir", split)
        self.classes = tuple(classes)
        self.palette = np.asarray(palette, np.uint8) if palette else voc_palette(len(self.classes))


@register_dataset("folder")
def build_folder(cfg: Dict[str, Any], split: str, train: bool, transform: Optional[Callable]) -> FolderDataset:
    """``data.root`` in mmsegmentation's layout; class names (``data.classes``) from the config."""
    data, num_classes = cfg["data"], cfg["model"]["num_classes"]
    if not data["classes"]:
        raise DataError("data.classes: a folder dataset needs its class names in the config")
    if len(data["classes"]) != num_classes:
        raise DataError(f"data.classes names {len(data['classes'])} classes but model.num_classes is {num_classes}")
    return FolderDataset(data["root"], split, data["classes"], data["palette"], transform, dataset_seed(cfg))
