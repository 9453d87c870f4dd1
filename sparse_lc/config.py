"""Run configuration: YAML files with ``_base_`` inheritance and ``--set key=value`` overrides.

A config is a nested dict. :data:`KEYS` describes every known key (its default and what it
does; ``docs/configs.md`` is generated from it); a config file states only what differs. A
key that is not known is an error that names it and lists close matches, so a typo never
silently does nothing. (Free-form keys, such as ``model.backbone_args``, take any value.)

Loading a config also

* imports the modules listed in ``custom_imports`` (user code that registers a backbone, a
  dataset or a train mode; mmsegmentation's convention), before anything is built;
* fills ``model.pixel_mean`` / ``model.pixel_std`` left unset with the normalisation the
  backbone's pretrained weights expect (registered with the backbone), so that a config that
  only names a backbone normalises its images right.
"""
from __future__ import annotations

import copy
import difflib
import importlib
import os
import sys
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence

import yaml

from .backbones import backbone_info
from .errors import ConfigError, UnknownNameError

__all__ = ["DEFAULTS", "KEYS", "ConfigError", "apply_override", "config_from_dict", "dump_config",
           "import_custom_modules", "load_config", "merge", "resolve"]


class Key(NamedTuple):
    """One config key: its dotted name, default and a one-line description."""

    name: str
    default: Any
    help: str
    free_form: bool = False  # a mapping or list taken as a whole (its entries are not checked)


KEYS: Sequence[Key] = (
    Key("custom_imports", [], "Python modules imported before anything is built (user code that registers "
        "a backbone, dataset or train mode), looked up on sys.path, in the current folder and beside the "
        "config file", free_form=True),
    Key("model.backbone", "resnet18", "a registered backbone (`sparse-lc list`)"),
    Key("model.backbone_args", {}, "keyword arguments of the backbone factory, e.g. `{dilations: [2, 4]}`",
        free_form=True),
    Key("model.num_classes", 21, "K, the number of classes"),
    Key("model.head_channels", 128, "hidden width of each stage's two-conv classifier"),
    Key("model.rho", 0.985, "default threshold, or `[rho_1, rho_2]`: a pixel whose top softmax score is "
        "<= rho goes on to the next stage (a calibration file beside a checkpoint overrides it)"),
    Key("model.halo", 0, "context pixels added around each later stage's hard pixels"),
    Key("model.pretrained", None, "local file of ImageNet weights in the backbone's layout (torchvision "
        "or timm state_dict), loaded into the backbone; never downloaded"),
    Key("model.pixel_mean", None, "RGB mean on the 0-255 scale; null: what the backbone's pretrained "
        "weights expect (registered with the backbone; ImageNet's for torchvision ResNets)"),
    Key("model.pixel_std", None, "RGB standard deviation on the 0-255 scale; null: the backbone's"),
    Key("data.type", "synthetic", "a registered dataset: voc | cityscapes | folder | synthetic"),
    Key("data.root", None, "dataset folder (not used by synthetic)"),
    Key("data.classes", None, "class names (folder datasets)", free_form=True),
    Key("data.palette", None, "`[[r, g, b], ...]` per class (folder datasets; default VOC's colours)",
        free_form=True),
    Key("data.train_split", "train", "split trained on"),
    Key("data.val_split", "val", "split evaluated on"),
    Key("data.calib_split", "val", "split `sparse-lc calibrate` fits temperatures and picks thresholds on"),
    Key("data.voc_aug", False, "VOC: train on SegmentationClassAug (10,582 images)"),
    Key("data.voc_aug_list", "ImageSets/Segmentation/train_aug.txt", "VOC: the id list of the aug set, "
        "relative to the VOC2012 folder"),
    Key("data.num_workers", 2, "DataLoader worker processes"),
    Key("data.synthetic.num_train", 1000, "synthetic: training scenes"),
    Key("data.synthetic.num_val", 100, "synthetic: validation scenes"),
    Key("data.synthetic.num_calib", 100, "synthetic: calibration scenes (split `calib`)"),
    Key("data.synthetic.size", [128, 128], "synthetic: scene size `[H, W]`"),
    Key("data.synthetic.seed", 0, "synthetic: scene seed"),
    Key("data.synthetic.num_objects", [2, 5], "synthetic: objects per scene, `[min, max]`"),
    Key("data.synthetic.radius_range", [0.14, 0.30], "synthetic: object radius as a share of the scene side"),
    Key("train.mode", "lc", "a registered train mode: lc (the paper) | dense (deep supervision only) | "
        "mc (model cascade)"),
    Key("train.iters", 20000, "iterations in all"),
    Key("train.warmup_iters", 5000, "lc: deep-supervision iterations (rho = 1) before the cascade"),
    Key("train.batch_size", 8, "images per iteration and process"),
    Key("train.crop_size", [512, 512], "training crop `[H, W]`"),
    Key("train.scale_range", [0.5, 2.0], "random rescaling range"),
    Key("train.flip", True, "random horizontal flips"),
    Key("train.optimizer", "sgd", "sgd | adamw"),
    Key("train.lr", 0.01, "base learning rate (poly decay)"),
    Key("train.momentum", 0.9, "SGD momentum"),
    Key("train.weight_decay", 0.0005, "weight decay"),
    Key("train.poly_power", 0.9, "power of the poly learning-rate decay"),
    Key("train.freeze_bn", False, "keep every batch norm in eval mode, its parameters fixed"),
    Key("train.stage_loss_weights", [1.0, 1.0, 1.0], "weight of each stage's loss"),
    Key("train.execution", "auto", "auto (dense while rho = 1, else sparse) | sparse | dense"),
    Key("train.checkpoint_interval", 1000, "iterations between checkpoints (latest.pth)"),
    Key("train.log_interval", 20, "iterations between log records"),
    Key("train.eval_interval", 0, "iterations between evaluations during training (0: none)"),
    Key("train.eval_at_end", True, "evaluate the final model"),
    Key("train.load_from", None, "start from these weights (e.g. the dense baseline's final.pth)"),
    Key("train.seed", 0, "seed of the weights, the sampler and the augmentation"),
    Key("eval.rhos", None, "thresholds to evaluate (default: `[model.rho, 1.0]`); an entry may be a pair",
        free_form=True),
    Key("work_dir", "work_dirs/default", "folder of a training run's checkpoints, log and evaluation"),
)


def _nest(keys: Iterable[Key]) -> Dict[str, Any]:
    tree: Dict[str, Any] = {}
    for key in keys:
        *sections, leaf = key.name.split(".")
        node = tree
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = key.default
    return tree


DEFAULTS: Dict[str, Any] = _nest(KEYS)
FREE_FORM = {key.name for key in KEYS if key.free_form}


def load_config(path: Optional[str] = None, overrides: Iterable[str] = ()) -> Dict[str, Any]:
    """DEFAULTS, then the file at ``path`` (and its ``_base_`` files), then ``key=value``
    overrides; then :func:`resolve` (custom imports, the backbone's normalisation)."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        merge(cfg, _read_with_bases(path, seen=()), source=path)
    for item in overrides:
        apply_override(cfg, item)
    return resolve(cfg, search=[os.path.dirname(os.path.abspath(path))] if path else [])


def config_from_dict(data: Dict[str, Any], source: str, overrides: Iterable[str] = ()) -> Dict[str, Any]:
    """DEFAULTS, then ``data`` (e.g. the config stored in a checkpoint), then overrides; then
    :func:`resolve`."""
    cfg = copy.deepcopy(DEFAULTS)
    merge(cfg, data, source=source)
    for item in overrides:
        apply_override(cfg, item)
    return resolve(cfg)


def resolve(cfg: Dict[str, Any], search: Sequence[str] = ()) -> Dict[str, Any]:
    """Import ``custom_imports`` (``search``: more folders to look in), then fill an unset
    ``model.pixel_mean`` / ``pixel_std`` from the backbone's registration. Returns ``cfg``."""
    import_custom_modules(cfg["custom_imports"], search)
    model = cfg["model"]
    try:
        info = backbone_info(model["backbone"])
    except UnknownNameError as e:
        raise ConfigError(f"model.backbone: {e}") from None
    for key, value in (("pixel_mean", info.pixel_mean), ("pixel_std", info.pixel_std)):
        if model[key] is None:
            model[key] = list(value)
    return cfg


def import_custom_modules(names: Any, search: Sequence[str] = ()) -> None:
    """Import each module of ``names`` (``custom_imports``). Modules are looked up on sys.path,
    then in the current folder and in ``search``; a module that cannot be imported is a
    ConfigError naming it."""
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"custom_imports: expected a list of module names, got {names!r}")
    for folder in [os.getcwd(), *search]:
        if folder not in sys.path:
            sys.path.append(folder)
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is not None and (name == e.name or name.startswith(e.name + ".")):
                raise ConfigError(f"custom_imports: no module named {name!r} (put it on PYTHONPATH, in the "
                                  f"current folder or beside the config file)") from None
            raise ConfigError(f"custom_imports: importing {name!r} failed: {e}") from None
        except Exception as e:  # user code: any error there stops the run before it starts
            raise ConfigError(f"custom_imports: importing {name!r} failed: {type(e).__name__}: {e}") from None


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


def reference_markdown() -> str:
    """Every key with its default and description, as a Markdown page (``docs/configs.md``)."""
    lines: List[str] = ["# Config keys", "",
                        "Generated from `sparse_lc/config.py` by `python tools/make_config_docs.py`; do not edit.",
                        "A config file states only what differs from these defaults; `_base_: file.yaml` "
                        "inherits another file, `--set key=value` overrides one key on the command line."]
    section = None
    for key in KEYS:
        top = key.name.split(".")[0] if "." in key.name else ""
        if top != section:
            section = top
            lines += ["", f"## {top or 'top level'}", "", "| key | default | what it does |", "|---|---|---|"]
        default = yaml.safe_dump(key.default, default_flow_style=True).strip().removesuffix("...").strip()
        lines.append(f"| `{key.name}` | `{default}` | {key.help} |")
    return "\n".join(lines) + "\n"
