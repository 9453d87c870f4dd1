"""What a dataset is (pairs of image and label files, read with OpenCV / Pillow), and how
datasets are registered by name (``data.type``) and built from a config."""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UnknownNameError
from ..registry import Registry
from .io import DataError, read_image, read_label
from .transforms import EvalTransform, TrainTransform

Sample = Tuple[str, str]  # (image path, label path)

#: ``data.type`` -> a builder ``(cfg, split, train, transform) -> SegDataset`` (see :func:`register_dataset`)
DATASETS: Registry[Callable[..., "SegDataset"]] = Registry("dataset")


def register_dataset(name: str, *, needs_root: bool = True, classes: Optional[Sequence[str]] = None,
                     palette: Optional[np.ndarray] = None) -> Callable:
    """Decorator: register a dataset builder ``(cfg, split, train, transform) -> SegDataset``
    under ``name`` (the config's ``data.type``). ``cfg`` is the whole config; ``split`` the split
    to read; ``train`` whether it is the training set; ``transform`` the sample transform.

    ``needs_root``: the config must set ``data.root``. ``classes`` / ``palette`` (RGB uint8
    ``[K, 3]``): the dataset's class names and colours, when fixed (None: from the config).
    """
    return DATASETS.register(name, needs_root=needs_root, classes=classes, palette=palette)


def dataset_seed(cfg: Dict[str, Any]) -> int:
    """The seed a dataset draws its augmentation from (``train.seed``)."""
    return cfg["train"]["seed"]


class SegDataset(Dataset):
    """Pairs of files; ``dataset[key]`` returns ``(image [3, H, W] float, label [H, W] int64)``.

    ``key`` may exceed ``len(dataset)``: the sample is ``key % len`` and ``key`` seeds its
    augmentation, so a sampler that hands out ``epoch * len + index`` gets a fresh, reproducible
    augmentation of each image in every epoch.

    Subclasses fill ``samples`` and set ``classes`` / ``palette``; ``load_label`` may map ids.
    """

    classes: Sequence[str] = ()
    palette: Optional[np.ndarray] = None
    num_classes: Optional[int] = None  # set by build_dataset: labels are checked against it

    def __init__(self, samples: List[Sample], transform: Optional[Callable] = None, seed: int = 0):
        self.samples = samples
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.samples)

    def missing_files(self) -> List[str]:
        """Image and label files of the sample list that do not exist."""
        return [path for pair in self.samples for path in pair if not os.path.isfile(path)]

    def require_files(self) -> None:
        """Raise DataError, naming the first missing file and the count, if any is missing."""
        missing = self.missing_files()
        if missing:
            raise DataError(f"{missing[0]}: file missing ({len(missing)} missing files in "
                            f"{len(self.samples)} pairs; sparse-lc check-data CONFIG lists them all)")

    def name(self, index: int) -> str:
        """A short name of sample ``index`` (its image file name without extension)."""
        return os.path.splitext(os.path.basename(self.samples[index][0]))[0]

    def load_image(self, index: int) -> np.ndarray:
        return read_image(self.samples[index][0])

    def load_label(self, index: int) -> np.ndarray:
        return read_label(self.samples[index][1])

    def load(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """The raw pair: BGR uint8 ``[H, W, 3]`` and class ids uint8 ``[H, W]``."""
        image, label = self.load_image(index), self.load_label(index)
        where = self.samples[index][1] if self.samples else self.name(index)
        if image.shape[:2] != label.shape:
            raise DataError(f"{where}: label size {label.shape[1]}x{label.shape[0]} "
                            f"differs from image size {image.shape[1]}x{image.shape[0]}")
        if self.num_classes is not None:
            bad = np.unique(label[(label >= self.num_classes) & (label != 255)])
            if bad.size:
                raise DataError(f"{where}: label values {bad.tolist()} outside [0, {self.num_classes}) and 255")
        return image, label

    def __getitem__(self, key: int) -> Tuple[torch.Tensor, torch.Tensor]:
        image, label = self.load(key % len(self))
        if self.transform is None:
            raise RuntimeError("dataset has no transform: set one to get tensors, or call load()")
        return self.transform(image, label, np.random.default_rng((self.seed, key)))


def _split_name(cfg: Dict[str, Any], train: bool, split: Optional[str] = None) -> str:
    return split or (cfg["data"]["train_split"] if train else cfg["data"]["val_split"])


def build_dataset(cfg: Dict[str, Any], train: bool, transform: Optional[object] = None,
                  require_files: bool = True, split: Optional[str] = None) -> SegDataset:
    """The training (``train=True``) or validation dataset of ``cfg``, with its transform.

    Training samples get ``TrainTransform`` (scale, crop, flip, normalise); validation samples
    only ``EvalTransform`` (normalise, whole image). ``transform`` overrides the choice.
    ``split`` names another split to read (e.g. ``data.calib_split``); default: the config's
    train or val split. With ``require_files`` a missing image or label file is an error here,
    before any work.
    """
    data = cfg["data"]
    try:
        builder = DATASETS.get(data["type"])
    except UnknownNameError as e:
        raise DataError(f"data.type: {e}") from None
    info = DATASETS.info(data["type"])
    if info["needs_root"] and not data["root"]:
        raise DataError(f"data.root: a {data['type']} dataset needs the path of its folder")
    num_classes = cfg["model"]["num_classes"]
    if info["classes"] is not None and num_classes < len(info["classes"]):
        raise DataError(f"model.num_classes ({num_classes}) is below the {len(info['classes'])} classes of the "
                        f"{data['type']} dataset: its labels would be out of range; set model.num_classes to "
                        f"{len(info['classes'])}")
    split_name = _split_name(cfg, train, split)
    dataset = builder(cfg, split_name, train, _default_transform(cfg, train) if transform is None else transform)
    dataset.num_classes = cfg["model"]["num_classes"]
    if require_files:
        dataset.require_files()
    if len(dataset) == 0:
        raise DataError(f"{data_location(cfg, train, split)}: the {split_name} split has no images")
    return dataset


def data_location(cfg: Dict[str, Any], train: bool, split: Optional[str] = None) -> str:
    """Where a split lives, for messages."""
    data = cfg["data"]
    if not DATASETS.info(data["type"])["needs_root"]:
        return f"data.{data['type']}"
    return f"{data['root']} ({_split_name(cfg, train, split)})"


def _default_transform(cfg: Dict[str, Any], train: bool):
    model = cfg["model"]
    if train:
        t = cfg["train"]
        return TrainTransform(t["crop_size"], t["scale_range"], model["pixel_mean"], model["pixel_std"], flip=t["flip"])
    return EvalTransform(model["pixel_mean"], model["pixel_std"])
