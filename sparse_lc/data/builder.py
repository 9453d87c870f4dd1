"""Datasets from the ``data`` section of a config, built by ``data.type`` from the registry."""
from __future__ import annotations

from typing import Any, Dict, Optional

from ..errors import UnknownNameError
from .base import DATASETS, SegDataset
from .io import DataError
from .transforms import EvalTransform, TrainTransform


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
    if DATASETS.info(data["type"])["needs_root"] and not data["root"]:
        raise DataError(f"data.root: a {data['type']} dataset needs the path of its folder")
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
    return ("data.synthetic" if data["type"] == "synthetic"
            else f"{data['root']} ({_split_name(cfg, train, split)})")


def _default_transform(cfg: Dict[str, Any], train: bool):
    model = cfg["model"]
    if train:
        t = cfg["train"]
        return TrainTransform(t["crop_size"], t["scale_range"], model["pixel_mean"], model["pixel_std"], flip=t["flip"])
    return EvalTransform(model["pixel_mean"], model["pixel_std"])
