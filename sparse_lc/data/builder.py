"""Datasets from the ``data`` section of a config."""
from __future__ import annotations

from typing import Any, Dict, Optional

from .base import SegDataset
from .cityscapes import CityscapesDataset
from .folder import FolderDataset
from .io import DataError
from .synthetic import SyntheticShapes
from .transforms import EvalTransform, TrainTransform
from .voc import VOCDataset

DATA_TYPES = ("voc", "cityscapes", "folder", "synthetic")


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
    dataset = _make_dataset(cfg, train, transform, _split_name(cfg, train, split))
    dataset.num_classes = cfg["model"]["num_classes"]
    if require_files:
        dataset.require_files()
    if len(dataset) == 0:
        raise DataError(f"{data_location(cfg, train, split)}: the {_split_name(cfg, train, split)} split has no images")
    return dataset


def data_location(cfg: Dict[str, Any], train: bool, split: Optional[str] = None) -> str:
    """Where a split lives, for messages."""
    data = cfg["data"]
    return ("data.synthetic" if data["type"] == "synthetic"
            else f"{data['root']} ({_split_name(cfg, train, split)})")


def _make_dataset(cfg: Dict[str, Any], train: bool, transform: Optional[object], split: str) -> SegDataset:
    data, model = cfg["data"], cfg["model"]
    if transform is None:
        if train:
            t = cfg["train"]
            transform = TrainTransform(t["crop_size"], t["scale_range"], model["pixel_mean"],
                                       model["pixel_std"], flip=t["flip"])
        else:
            transform = EvalTransform(model["pixel_mean"], model["pixel_std"])
    seed, kind = cfg["train"]["seed"], data["type"]
    if kind == "synthetic":
        syn = data["synthetic"]
        count = {"train": syn["num_train"], "calib": syn["num_calib"]}.get(split, syn["num_val"])
        return SyntheticShapes(split, count, tuple(syn["size"]),
                               transform, seed=seed, num_objects=tuple(syn["num_objects"]),
                               radius_range=tuple(syn["radius_range"]), scene_seed=syn["seed"])
    _require_root(data)
    if kind == "voc":
        return VOCDataset(data["root"], split, data["voc_aug"] and train, data["voc_aug_list"], transform, seed)
    if kind == "cityscapes":
        return CityscapesDataset(data["root"], split, transform, seed)
    if kind == "folder":
        if not data["classes"]:
            raise DataError("data.classes: a folder dataset needs its class names in the config")
        if len(data["classes"]) != model["num_classes"]:
            raise DataError(f"data.classes names {len(data['classes'])} classes but model.num_classes is "
                            f"{model['num_classes']}")
        return FolderDataset(data["root"], split, data["classes"], data["palette"], transform, seed)
    raise DataError(f"data.type must be one of {DATA_TYPES}, got {kind!r}")


def _require_root(data: Dict[str, Any]) -> None:
    if data["type"] not in DATA_TYPES:
        raise DataError(f"data.type must be one of {DATA_TYPES}, got {data['type']!r}")
    if data["type"] != "synthetic" and not data["root"]:
        raise DataError(f"data.root: a {data['type']} dataset needs the path of its folder")
