"""``sparse-lc list``: what is registered (backbones with parameter counts, datasets, train modes)."""
from __future__ import annotations

import argparse
import json

from .options import add_json_option

SUMMARY = "list the registered backbones, datasets and train modes"
DESCRIPTION = ("What a config can name: backbones (model.backbone) with their parameter counts at the default "
               "arguments, stage widths and what their pretrained weights expect; datasets (data.type); train "
               "modes (train.mode). With a CONFIG, its custom_imports are imported first, so user code that "
               "registers more is listed too. Every backbone's stages 2-3 are checked on the way (what the sparse "
               "path cannot run exactly is an error naming the backbone, stage and module).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", default=None,
                        help="a YAML config whose custom_imports should be listed too (default: none)")
    add_json_option(parser, "one JSON object instead of the tables")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..backbones import backbone_info, build_backbone, list_backbones
    from ..backbones.base import check_backbone
    from ..config import load_config
    from ..data import DATASETS
    from ..errors import ModelError
    from ..training import TRAIN_MODES

    if args.config is not None:
        load_config(args.config)  # imports its custom_imports, which register their entries
    backbones = []
    for name in list_backbones():
        with torch.device("meta"):  # shapes only: no memory, no initialisation cost
            backbone = build_backbone(name)
        try:
            check_backbone(backbone)  # computes nothing: meta weights will do
        except ModelError as e:
            raise ModelError(f"backbone {name!r} (default arguments): {e}") from None
        info = backbone_info(name)
        backbones.append({"name": name, "parameters": sum(p.numel() for p in backbone.parameters()),
                          "stage_channels": list(backbone.stage_channels), "weights_layout": info.weights_layout,
                          "weights_file": info.weights_file, "pixel_mean": list(info.pixel_mean),
                          "pixel_std": list(info.pixel_std)})
    datasets = {name: {"needs_root": DATASETS.info(name)["needs_root"]} for name in DATASETS.names()}
    modes = {name: TRAIN_MODES.info(name)["description"] for name in TRAIN_MODES.names()}
    if args.json:
        print(json.dumps({"backbones": backbones, "datasets": datasets, "train_modes": modes}))
    else:
        print(_table(backbones, datasets, modes))
    return 0


def _table(backbones, datasets, modes) -> str:
    width = max(len(b["name"]) for b in backbones)
    lines = ["backbones (model.backbone), parameters at the default arguments, heads not included:",
             f"  {'name':<{width}} {'parameters':>11}  {'stage channels':<15} {'weights':<12} mean / std (RGB, 0-255)"]
    for b in backbones:
        weights = b["weights_layout"] or "-"
        norm = f"{_numbers(b['pixel_mean'])} / {_numbers(b['pixel_std'])}"
        lines.append(f"  {b['name']:<{width}} {b['parameters'] / 1e6:10.2f}M  "
                     f"{'/'.join(map(str, b['stage_channels'])):<15} {weights:<12} {norm}")
    lines.append("datasets (data.type): " + ", ".join(
        f"{name}" + ("" if info["needs_root"] else " (generated, no files)") for name, info in datasets.items()))
    lines.append("train modes (train.mode):")
    lines += [f"  {name:<6} {description}" for name, description in modes.items()]
    return "\n".join(lines)


def _numbers(values) -> str:
    return ",".join(f"{v:g}" for v in values)
