"""Every config key: its default, the values it takes (:mod:`.schema`) and what it does.

One row per key; :data:`DEFAULTS` and ``docs/configs.md`` (:func:`reference_markdown`) are
made from this table, and :mod:`.config` checks every loaded value against it.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, NamedTuple, Sequence

import yaml

from .schema import Check, Choice, ListOf, Maybe, Number, Range, Threshold, boolean, mapping, rgb, size_pair, text

__all__ = ["DEFAULTS", "FREE_FORM", "KEYS", "Key", "reference_markdown"]


class Key(NamedTuple):
    """One config key: its dotted name, default, the values it takes, and a one-line description."""

    name: str
    default: Any
    check: Check
    help: str
    free_form: bool = False  # a mapping or list taken as a whole (its entries are not merged key by key)


WHOLE_0, WHOLE_1 = Number(0, whole=True), Number(1, whole=True)
POSITIVE = Number(0, low_open=True)
PATH = Maybe(text())

KEYS: Sequence[Key] = (
    Key("custom_imports", [], ListOf(text()), "Python modules imported before anything is built (user code that "
        "registers a backbone, dataset or train mode), looked up on sys.path, in the current folder and beside the "
        "config file", free_form=True),
    Key("model.backbone", "resnet18", text(), "a registered backbone (`sparse-lc list`)"),
    Key("model.backbone_args", {}, mapping(), "keyword arguments of the backbone factory, e.g. "
        "`{dilations: [2, 4]}`; dropped when a file names another backbone than its `_base_`", free_form=True),
    Key("model.num_classes", 21, Number(1, 255, whole=True), "K, the number of classes (label 255 is ignored)"),
    Key("model.head_channels", 128, WHOLE_1, "hidden width of each stage's two-conv classifier"),
    Key("model.rho", 0.985, Threshold(), "default threshold, or `[rho_1, rho_2]`: a pixel whose top softmax score "
        "is <= rho goes on to the next stage (a calibration file beside a checkpoint overrides it)"),
    Key("model.halo", 0, WHOLE_0, "context pixels added around each later stage's hard pixels"),
    Key("model.pretrained", None, PATH, "local file of ImageNet weights in the backbone's layout (torchvision or "
        "timm state_dict), loaded into the backbone; never downloaded"),
    Key("model.pixel_mean", None, Maybe(ListOf(Number(), length=3, expected="[r, g, b], three numbers")),
        "RGB mean on the 0-255 scale; null: what the backbone's pretrained weights expect (registered with the "
        "backbone; ImageNet's for torchvision ResNets)"),
    Key("model.pixel_std", None, Maybe(ListOf(POSITIVE, length=3, expected="[r, g, b], three numbers > 0")),
        "RGB standard deviation on the 0-255 scale; null: the backbone's"),
    Key("data.type", "synthetic", text(), "a registered dataset: voc | cityscapes | folder | synthetic"),
    Key("data.root", None, PATH, "dataset folder (not used by synthetic)"),
    Key("data.classes", None, Maybe(ListOf(text(), min_length=1, unique=True,
                                           expected="a list of distinct class names, e.g. [road, car]")),
        "class names (folder datasets): "
        "as many as model.num_classes", free_form=True),
    Key("data.palette", None, Maybe(ListOf(rgb(), min_length=1, expected="a list of [r, g, b] colours")),
        "`[[r, g, b], ...]` per class (folder datasets; "
        "default VOC's colours)", free_form=True),
    Key("data.train_split", "train", text(), "split trained on"),
    Key("data.val_split", "val", text(), "split evaluated on"),
    Key("data.calib_split", "val", text(), "split `sparse-lc calibrate` fits temperatures and picks thresholds on"),
    Key("data.voc_aug", False, boolean(), "VOC: train on SegmentationClassAug (10,582 images)"),
    Key("data.voc_aug_list", "ImageSets/Segmentation/train_aug.txt", text(), "VOC: the id list of the aug set, "
        "relative to the VOC2012 folder"),
    Key("data.num_workers", 2, WHOLE_0, "DataLoader worker processes (0: load in the main process)"),
    Key("data.synthetic.num_train", 1000, WHOLE_1, "synthetic: training scenes"),
    Key("data.synthetic.num_val", 100, WHOLE_1, "synthetic: validation scenes"),
    Key("data.synthetic.num_calib", 100, WHOLE_1, "synthetic: calibration scenes (split `calib`)"),
    Key("data.synthetic.size", [128, 128], size_pair(8), "synthetic: scene size `[H, W]`"),
    Key("data.synthetic.seed", 0, WHOLE_0, "synthetic: scene seed"),
    Key("data.synthetic.num_objects", [2, 5], Range(Number(0, whole=True), strict=True),
        "synthetic: objects per scene, from the first number up to one less than the second"),
    Key("data.synthetic.radius_range", [0.14, 0.30], Range(Number(0, 1, low_open=True)),
        "synthetic: object radius as a share of the scene's shorter side"),
    Key("train.mode", "lc", text(), "a registered train mode: lc (the paper) | dense (deep supervision only) | "
        "mc (model cascade)"),
    Key("train.iters", 20000, WHOLE_1, "iterations in all"),
    Key("train.warmup_iters", 5000, WHOLE_0, "lc: deep-supervision iterations (rho = 1) before the cascade; "
        "at most train.iters"),
    Key("train.batch_size", 8, WHOLE_1, "images per iteration and process"),
    Key("train.crop_size", [512, 512], size_pair(8), "training crop `[H, W]`"),
    Key("train.scale_range", [0.5, 2.0], Range(POSITIVE), "random rescaling range"),
    Key("train.flip", True, boolean(), "random horizontal flips"),
    Key("train.optimizer", "sgd", Choice("sgd", "adamw"), "the optimizer"),
    Key("train.lr", 0.01, POSITIVE, "base learning rate (poly decay)"),
    Key("train.momentum", 0.9, Number(0, 1, high_open=True), "SGD momentum"),
    Key("train.weight_decay", 0.0005, Number(0), "weight decay"),
    Key("train.poly_power", 0.9, Number(0), "power of the poly learning-rate decay"),
    Key("train.freeze_bn", False, boolean(), "keep every batch norm in eval mode, its parameters fixed"),
    Key("train.stage_loss_weights", [1.0, 1.0, 1.0], ListOf(Number(0), length=3, expected="three numbers >= 0"),
        "weight of each stage's loss"),
    Key("train.execution", "auto", Choice("auto", "sparse", "dense"), "auto (dense while rho = 1, else sparse) | "
        "sparse | dense"),
    Key("train.amp", "off", Choice("off", "fp16", "bf16"), "mixed precision: the forward pass and the loss under "
        "torch.autocast in float16 (with a gradient scaler) or bfloat16, weights and optimizer in float32; spconv's "
        "convolutions run in float16 on CUDA, in float32 otherwise (spconv has no bfloat16 kernels)"),
    Key("train.checkpoint_interval", 1000, WHOLE_1, "iterations between checkpoints (latest.pth)"),
    Key("train.log_interval", 20, WHOLE_1, "iterations between log records"),
    Key("train.eval_interval", 0, WHOLE_0, "iterations between evaluations during training (0: none)"),
    Key("train.eval_at_end", True, boolean(), "evaluate the final model"),
    Key("train.load_from", None, PATH, "start from these weights (e.g. the dense baseline's final.pth)"),
    Key("train.seed", 0, WHOLE_0, "seed of the weights, the sampler and the augmentation"),
    Key("eval.rhos", None, Maybe(ListOf(Threshold(), min_length=1)), "thresholds to evaluate (default: "
        "`[model.rho, 1.0]`); an entry may be a pair", free_form=True),
    Key("work_dir", "work_dirs/default", text(), "folder of a training run's checkpoints, log and evaluation"),
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


def reference_markdown() -> str:
    """Every key with its default and description, as a Markdown page (``docs/configs.md``)."""
    lines: List[str] = ["# Config keys", "",
                        "Commands on this page run from the project's folder with its environment active: "
                        "`source .venv/bin/activate` (the README's set-up makes `.venv`).", "",
                        "Generated from `sparse_lc/config_keys.py` by `python tools/make_config_docs.py`; do not edit.",
                        "A config file states only what differs from these defaults; `_base_: file.yaml` "
                        "inherits another file, `--set key=value` overrides one key on the command line. A file's "
                        "values are merged over its `_base_` files' key by key (mappings merge, other values "
                        "replace; `--set` replaces a free-form value whole). `model.backbone_args` belong to "
                        "`model.backbone`: they merge key by key while the backbone stays the same, and a file (or a "
                        "`--set`) that names another backbone starts from none (only the arguments it gives itself "
                        "apply). An argument the backbone does not take is an error naming it and the file (or "
                        "`--set`) it came from. Every "
                        "value is checked when the config is loaded, before any work: an error names the file "
                        "(or `--set`), the key, the value and what it takes. Numbers may be written `1e-3` or "
                        "`2e4` (YAML 1.2); a whole number written `2e4` is read as 20000. Checks of combinations: "
                        "`data.classes` must name `model.num_classes` classes; for training, "
                        "`train.warmup_iters` may not exceed `train.iters` in mode lc, `train.stage_loss_weights` "
                        "may not all be 0, and a warning is printed when `train.eval_interval` exceeds "
                        "`train.iters` or a synthetic scene is smaller than `train.crop_size`."]
    section = None
    for key in KEYS:
        top = key.name.split(".")[0] if "." in key.name else ""
        if top != section:
            section = top
            lines += ["", f"## {top or 'top level'}", "", "| key | default | takes | what it does |",
                      "|---|---|---|---|"]
        default = yaml.safe_dump(key.default, default_flow_style=True).strip().removesuffix("...").strip()
        takes = key.check.expected.replace("|", "/")
        lines.append(f"| `{key.name}` | `{default}` | {takes} | {key.help} |")
    return "\n".join(lines) + "\n"
