"""The ``sparse-lc`` command: argument parsing and printing only; every action is a library call."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import List, Optional

import numpy as np
import torch

from . import __version__
from .builder import build_model
from .checkpoint import CheckpointError, load_model_weights
from .config import ConfigError, load_config
from .data import DataError, build_dataset, check_dataset, render_scene
from .engine import (DemoRow, EvalResult, TrainingDiverged, confidence_quantiles, evaluate, run_demo,
                     save_eval_report, train)
from .engine.dist import init_distributed
from .inference import prepare_images


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _add_config_args(parser: argparse.ArgumentParser, required: bool) -> None:
    if required:
        parser.add_argument("config", help="YAML config file")
    else:
        parser.add_argument("--config", default=None, help="YAML config (default: built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set model.rho=0.9 (repeatable)")


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run (auto: CUDA when available)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _load(args: argparse.Namespace):
    cfg = load_config(args.config, args.overrides)
    if getattr(args, "work_dir", None):
        cfg["work_dir"] = args.work_dir
    return cfg


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparse-lc", formatter_class=_Formatter,
        description="Deep layer cascade segmentation: easy pixels stop early, hard pixels go on "
                    "through spconv submanifold stages.")
    parser.add_argument("--version", action="version", version=f"sparse-lc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", formatter_class=_Formatter,
                          help="run the cascade on a generated image and print per-stage shares",
                          description="Run the model (config defaults: ResNet-18 OS8; untrained unless "
                                      "model.pretrained is set) on a generated image, sparse and dense, "
                                      "and print per-stage pixel shares, times and their agreement.")
    _add_config_args(demo, required=False)
    demo.add_argument("--size", type=int, nargs=2, default=[512, 512], metavar=("H", "W"),
                      help="size of the generated image")
    demo.add_argument("--rho", type=float, nargs="+", default=None,
                      help="thresholds to run (default: 0, 1 and the 25/50/75%% quantiles of "
                           "stage-1 confidence, which split even an untrained model's pixels)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the generated image and weights")
    demo.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    demo.set_defaults(func=cmd_demo)

    tr = sub.add_parser("train", formatter_class=_Formatter, help="train a cascade (torchrun for DDP)",
                        description="Train the model of CONFIG: deep supervision, then cascade fine-tuning "
                                    "(train.mode lc), or a baseline (dense, mc). Writes latest.pth, final.pth, "
                                    "log.jsonl and config.yaml to work_dir. Under torchrun: DDP.")
    _add_config_args(tr, required=True)
    tr.add_argument("--work-dir", default=None, help="override work_dir of the config")
    tr.add_argument("--resume", action="store_true", help="continue from work_dir/latest.pth")
    _add_run_args(tr)
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", formatter_class=_Formatter, help="evaluate a checkpoint at one or more rho",
                        description="mIoU, per-class IoU, accuracy, per-stage statistics and MACs on the "
                                    "validation split of CONFIG, for each rho (one trained model).")
    _add_config_args(ev, required=True)
    ev.add_argument("checkpoint", help="checkpoint (.pth) written by sparse-lc train")
    ev.add_argument("--rho", type=float, nargs="+", default=None,
                    help="thresholds (default: eval.rhos of the config, else model.rho and 1)")
    ev.add_argument("--json", action="store_true", help="print one JSON list instead of the table")
    ev.add_argument("--out", default=None,
                    help="folder for eval.json and rho_sweep.png (default: the checkpoint's folder)")
    _add_run_args(ev)
    ev.set_defaults(func=cmd_eval)

    check = sub.add_parser("check-data", formatter_class=_Formatter, help="report problems in a dataset",
                           description="Walk the training and validation splits of CONFIG and report missing "
                                       "pairs, unreadable files, size mismatches and out-of-range labels.")
    _add_config_args(check, required=True)
    check.add_argument("--split", choices=("train", "val", "both"), default="both", help="which split(s)")
    check.set_defaults(func=cmd_check_data)
    return parser


def cmd_demo(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = build_model(cfg["model"]).eval()
    image, _ = render_scene(np.random.default_rng(args.seed), tuple(args.size))
    images = prepare_images(image, model.pixel_mean, model.pixel_std, channel_order="bgr")
    rhos = args.rho
    trained = "pretrained backbone" if cfg["model"]["pretrained"] else "random weights"
    print(f"model {cfg['model']['backbone']} ({trained}), image {args.size[0]}x{args.size[1]} "
          f"(generated, seed {args.seed}), {torch.get_num_threads()} threads")
    if rhos is None:
        with torch.no_grad():
            quantiles = confidence_quantiles(model, images, (0.25, 0.5, 0.75))
        rhos = [0.0, *quantiles, 1.0]
        print("rho: 0, 1 and the 25/50/75% quantiles of stage-1 confidence "
              "(an untrained model is unsure everywhere)")
    _print_demo(run_demo(model, images, rhos))
    return 0


def _print_demo(rows: List[DemoRow]) -> None:
    print(f"{'rho':>10} {'stage 1':>8} {'stage 2':>8} {'stage 3':>8} {'sparse ms':>10} {'dense ms':>9} "
          f"{'speed-up':>8} {'max|sparse-dense|':>18}")
    for r in rows:
        s1, s2, s3 = (100 * s for s in r.shares)
        print(f"{r.rho:>10.6g} {s1:>7.1f}% {s2:>7.1f}% {s3:>7.1f}% {1e3 * r.sparse_s:>10.1f} "
              f"{1e3 * r.dense_s:>9.1f} {r.dense_s / r.sparse_s:>7.2f}x {r.max_abs_diff:>18.2e}")


def cmd_train(args: argparse.Namespace) -> int:
    summary = train(_load(args), resume=args.resume, device=args.device, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"done: {summary.iterations} iterations; weights in {summary.final_checkpoint}")
        if summary.evaluation:
            _print_eval([EvalResult(**r) for r in summary.evaluation])
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    cfg = _load(args)
    info = init_distributed(args.device)
    model = build_model(cfg["model"])
    load_model_weights(model, args.checkpoint)
    model.to(info.device)
    rhos = args.rho or cfg["eval"]["rhos"] or [cfg["model"]["rho"], 1.0]
    results = evaluate(model, build_dataset(cfg, train=False), rhos, info, progress=not args.no_progress)
    if not info.is_main:
        return 0
    out = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    written = save_eval_report(results, out, title=os.path.basename(args.config))
    if args.json:
        print(json.dumps([r.to_json() for r in results]))
    else:
        _print_eval(results)
        print("wrote " + ", ".join(written))
    return 0


def _fmt(value: Optional[float], scale: float = 100.0) -> str:
    return "  -  " if value is None else f"{scale * value:5.1f}"


def _print_eval(results: List[EvalResult]) -> None:
    print(f"{'rho':>6} {'mIoU':>6} {'pixAcc':>6} | {'share s1':>8} {'s2':>5} {'s3':>5} | {'acc s1':>6} "
          f"{'s2':>5} {'s3':>5} | {'bnd s2-3':>8} | {'GMACs':>7} {'dense':>7} {'ratio':>6}")
    for r in results:
        print(f"{r.rho:>6g} {_fmt(r.miou):>6} {_fmt(r.pixel_acc):>6} | {_fmt(r.stage_share[0]):>8} "
              f"{_fmt(r.stage_share[1])} {_fmt(r.stage_share[2])} | {_fmt(r.stage_accuracy[0]):>6} "
              f"{_fmt(r.stage_accuracy[1])} {_fmt(r.stage_accuracy[2])} | {_fmt(r.boundary_share):>8} | "
              f"{r.macs_cascade / 1e9:7.3f} {r.macs_dense / 1e9:7.3f} {r.macs_dense / r.macs_cascade:5.2f}x")


def cmd_check_data(args: argparse.Namespace) -> int:
    cfg = _load(args)
    splits = {"train": [True], "val": [False], "both": [True, False]}[args.split]
    problems, total = [], 0
    for train_split in splits:
        dataset = build_dataset(cfg, train=train_split, require_files=False)
        total += len(dataset)
        problems += check_dataset(dataset, cfg["model"]["num_classes"])
    for problem in problems:
        print(problem)
    print(f"checked {total} images: {len(problems)} problem(s)")
    return 1 if problems else 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except TrainingDiverged as e:
        print(f"sparse-lc {args.command}: {e}", file=sys.stderr)
        return 1
    except (ConfigError, CheckpointError, DataError, ValueError) as e:
        print(f"sparse-lc {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
