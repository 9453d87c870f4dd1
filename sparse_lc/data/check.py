"""Walk a dataset and report every problem with its file: ``sparse-lc check-data CONFIG``."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List

import numpy as np
from tqdm import tqdm

from .dataset import SegDataset
from .folder import FolderDataset
from .io import DataError, read_image
from .transforms import IGNORE_INDEX


@dataclass
class DataProblem:
    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def check_dataset(dataset: SegDataset, num_classes: int, progress: bool = True) -> List[DataProblem]:
    """Missing pairs, unreadable files, image/label size mismatches and label values outside
    ``[0, num_classes)`` and the ignore value 255, in the order of the sample list."""
    problems: List[DataProblem] = []
    if isinstance(dataset, FolderDataset):
        problems += _labels_without_image(dataset)
    for index in tqdm(range(len(dataset)), desc="check-data", unit="img", disable=not progress):
        problems += _check_sample(dataset, index, num_classes)
    return problems


def _check_sample(dataset: SegDataset, index: int, num_classes: int) -> List[DataProblem]:
    problems: List[DataProblem] = []
    if not dataset.samples:  # generated data: no files, check the arrays
        label_path = dataset.name(index)
        image, label = dataset.load(index)
    else:
        image_path, label_path = dataset.samples[index]
        missing = [p for p in (image_path, label_path) if not os.path.isfile(p)]
        if len(missing) == 2:
            return [DataProblem(p, "missing (both halves of the pair)") for p in missing]
        if missing:
            other = label_path if missing[0] == image_path else image_path
            return [DataProblem(missing[0], f"missing (the other half of the pair is {other})")]
        image = _try(read_image, image_path, problems)
        label = _try(lambda _: dataset.load_label(index), label_path, problems)
        if image is None or label is None:
            return problems
    if image.shape[:2] != label.shape:
        problems.append(DataProblem(label_path, f"size {label.shape[1]}x{label.shape[0]} differs from "
                                                f"its image's {image.shape[1]}x{image.shape[0]}"))
    values = np.unique(label)
    bad = values[(values >= num_classes) & (values != IGNORE_INDEX)]
    if bad.size:
        problems.append(DataProblem(label_path, f"label values {bad.tolist()} outside "
                                                f"[0, {num_classes}) and {IGNORE_INDEX}"))
    return problems


def _try(read, path: str, problems: List[DataProblem]):
    """``read(path)``, or None with the problem recorded."""
    try:
        return read(path)
    except DataError as e:
        problems.append(DataProblem(path, str(e).split(": ", 1)[-1]))
        return None


def _labels_without_image(dataset: FolderDataset) -> List[DataProblem]:
    label_dir = dataset.label_dir
    paired = {os.path.basename(label) for _, label in dataset.samples}
    if not os.path.isdir(label_dir):
        return [DataProblem(label_dir, "label folder missing")]
    return [DataProblem(os.path.join(label_dir, f), "label without an image")
            for f in sorted(os.listdir(label_dir)) if f.endswith(".png") and f not in paired]
