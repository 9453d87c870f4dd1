"""Run configuration: YAML files with ``_base_`` inheritance and ``--set key=value`` overrides.

A config is a nested dict. :data:`DEFAULTS` lists every known key with its default; a config
file only states what differs. A key that is not known is an error that names it and lists
close matches, so a typo never silently does nothing. (Free-form sections, such as
``model.backbone_args``, take any keys.)
"""
from __future__ import annotations

import copy
import difflib
import os
from typing import Any, Dict, Iterable, Optional

import yaml

DEFAULTS: Dict[str, Any] = {
    "model": {
        "backbone": "resnet18",     # a name from sparse_lc.list_backbones()
        "backbone_args": {},        # keyword arguments of the backbone factory, e.g. dilations
        "num_classes": 21,
        "head_channels": 128,       # hidden width of each stage's two-conv classifier
        "rho": 0.985,               # default threshold, or [rho_1, rho_2] (a calibration file overrides it)
        "halo": 0,                  # context pixels added around each later stage's hard pixels
        "pretrained": None,         # local torchvision ResNet state_dict (.pth), never downloaded
        "pixel_mean": [123.675, 116.28, 103.53],  # RGB, 0-255
        "pixel_std": [58.395, 57.12, 57.375],
    },
    "data": {
        "type": "synthetic",        # voc | cityscapes | folder | synthetic
        "root": None,               # dataset folder (not used by synthetic)
        "classes": None,            # class names (folder datasets)
        "palette": None,            # [[r, g, b], ...] per class (folder datasets; default VOC's)
        "train_split": "train",
        "val_split": "val",
        "calib_split": "val",       # where `sparse-lc calibrate` fits temperatures and picks thresholds
        "voc_aug": False,           # VOC: train on SegmentationClassAug (10,582 images)
        "voc_aug_list": "ImageSets/Segmentation/train_aug.txt",
        "num_workers": 2,
        "synthetic": {"num_train": 1000, "num_val": 100, "num_calib": 100, "size": [128, 128], "seed": 0,
                      "num_objects": [2, 5], "radius_range": [0.14, 0.30]},
    },
    "train": {
        "mode": "lc",               # lc (the paper) | dense (deep supervision only) | mc (model cascade)
        "iters": 20000,
        "warmup_iters": 5000,       # lc: deep-supervision iterations (rho = 1) before the cascade
        "batch_size": 8,            # per process
        "crop_size": [512, 512],
        "scale_range": [0.5, 2.0],
        "flip": True,
        "optimizer": "sgd",         # sgd | adamw
        "lr": 0.01,
        "momentum": 0.9,
        "weight_decay": 0.0005,
        "poly_power": 0.9,
        "freeze_bn": False,
        "stage_loss_weights": [1.0, 1.0, 1.0],
        "execution": "auto",        # auto (dense while rho = 1, else sparse) | sparse | dense
        "checkpoint_interval": 1000,
        "log_interval": 20,
        "eval_interval": 0,         # 0: no evaluation during training
        "eval_at_end": True,
        "load_from": None,          # start from these weights (e.g. the dense baseline's final.pth)
        "seed": 0,
    },
    "eval": {
        "rhos": None,               # default: [model.rho, 1.0]; an entry may be a pair [rho_1, rho_2]
    },
    "work_dir": "work_dirs/default",
}

FREE_FORM = {"model.backbone_args", "data.classes", "data.palette", "eval.rhos"}


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the file or key."""


def load_config(path: Optional[str] = None, overrides: Iterable[str] = ()) -> Dict[str, Any]:
    """DEFAULTS, then the file at ``path`` (and its ``_base_`` files), then ``key=value`` overrides."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        merge(cfg, _read_with_bases(path, seen=()), source=path)
    for item in overrides:
        apply_override(cfg, item)
    return cfg


def config_from_dict(data: Dict[str, Any], source: str, overrides: Iterable[str] = ()) -> Dict[str, Any]:
    """DEFAULTS, then ``data`` (e.g. the config stored in a checkpoint), then overrides."""
    cfg = copy.deepcopy(DEFAULTS)
    merge(cfg, data, source=source)
    for item in overrides:
        apply_override(cfg, item)
    return cfg


def _read_with_bases(path: str, seen: tuple) -> Dict[str, Any]:
    path = os.path.abspath(path)
    if path in seen:
        raise ConfigError(f"{path}: _base_ files include each other in a loop")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys, got {type(data).__name__}")
    bases = data.pop("_base_", [])
    bases = [bases] if isinstance(bases, str) else bases
    merged: Dict[str, Any] = {}
    for base in bases:
        base_path = os.path.join(os.path.dirname(path), base)
        _deep_update(merged, _read_with_bases(base_path, seen + (path,)))
    _deep_update(merged, data)
    return merged


def _deep_update(target: Dict[str, Any], update: Dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def merge(cfg: Dict[str, Any], update: Dict[str, Any], source: str, prefix: str = "") -> None:
    """Merge ``update`` into ``cfg`` in place, refusing keys ``cfg`` does not have."""
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in cfg:
            raise ConfigError(f"{source}: unknown key {dotted!r}{_close_matches(cfg, key, prefix)}")
        if isinstance(cfg[key], dict) and dotted not in FREE_FORM:
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {dotted!r} must be a mapping, got {value!r}")
            merge(cfg[key], value, source, prefix=f"{dotted}.")
        else:
            cfg[key] = copy.deepcopy(value)


def apply_override(cfg: Dict[str, Any], item: str) -> None:
    """Apply one ``dotted.key=value`` override; the value is parsed as YAML (``0.9``, ``[2, 4]``)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    dotted, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    update: Dict[str, Any] = value
    for part in reversed(dotted.strip().split(".")):
        update = {part: update}
    merge(cfg, update, source=f"--set {dotted}")


def _close_matches(section: Dict[str, Any], key: str, prefix: str) -> str:
    close = difflib.get_close_matches(key, list(section), n=3)
    if close:
        return f" (did you mean {', '.join(prefix + c for c in close)}?)"
    return f" (known keys here: {', '.join(prefix + k for k in section)})"


def dump_config(cfg: Dict[str, Any]) -> str:
    """The config as YAML, e.g. to store beside a run's checkpoints."""
    return yaml.safe_dump(cfg, sort_keys=False)
