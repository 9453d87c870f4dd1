"""The ``sparse-lc`` command: argument parsing only; every action is a library call."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import numpy as np
import torch

from . import __version__
from .builder import build_model
from .checkpoint import CheckpointError
from .config import ConfigError, load_config
from .data import render_scene
from .engine import DemoRow, confidence_quantiles, run_demo
from .inference import prepare_images


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="YAML config (default: built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set model.rho=0.9 (repeatable)")


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
    _add_config_args(demo)
    demo.add_argument("--size", type=int, nargs=2, default=[512, 512], metavar=("H", "W"),
                      help="size of the generated image")
    demo.add_argument("--rho", type=float, nargs="+", default=None,
                      help="thresholds to run (default: 0, 1 and the 25/50/75%% quantiles of "
                           "stage-1 confidence, which split even an untrained model's pixels)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the generated image and weights")
    demo.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    demo.set_defaults(func=cmd_demo)
    return parser


def cmd_demo(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
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


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (ConfigError, CheckpointError, ValueError) as e:
        print(f"sparse-lc {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
