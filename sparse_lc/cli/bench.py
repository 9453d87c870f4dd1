"""``sparse-lc bench``: time the cascade against the same model run dense."""
from __future__ import annotations

import argparse

from .options import (
    add_device_option,
    add_json_option,
    add_model_options,
    add_rho_option,
    model_from_args,
    print_reports,
)

SUMMARY = "time the cascade against the same model run dense"
DESCRIPTION = ("End-to-end speed: the cascade (sparse stages 2-3) against the same model with every stage on every "
               "pixel, per section (stage 1, 2, 3, assembly) and in total, with the MAC ratio as the limit, images "
               "per second and peak memory. Batch norm is folded into the convs first (both runs), unless "
               "--no-fuse. Hard pixels come from the model's confidences at --rho (a trained model), or from "
               "clustered synthetic masks of given shares (--hard-share, --sweep: any weights).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser, without_both="a random-weight ResNet-18 OS8, the default config")
    parser.add_argument("--size", type=int, nargs=2, default=[512, 512], metavar=("H", "W"), help="input size")
    which = parser.add_mutually_exclusive_group()
    add_rho_option(which, many=True, default="the model's own confidences at its rho")
    which.add_argument("--hard-share", type=float, nargs=2, default=None, metavar=("H2", "H3"),
                       help="force clustered hard masks with these shares after stage 1 and 2")
    which.add_argument("--sweep", type=float, nargs="+", default=None, metavar="H2",
                       help="force clustered masks for each share h2 (h3 = h2 / 2) and compare stages 2-3 time "
                            "and MAC ratios")
    parser.add_argument("--batch", type=int, default=1, help="images per forward pass")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed passes of each kind")
    parser.add_argument("--reps", type=int, default=7, help="timed passes of each kind (median reported)")
    parser.add_argument("--no-fuse", action="store_true", help="keep batch norm separate")
    add_json_option(parser, "one JSON object (a list for several settings)")
    add_device_option(parser)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..analysis import bench
    from ..builder import build_model
    from ..config import load_config
    from ..utils.distributed import init_distributed
    from ..visualization import bench_table

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.config is None and args.checkpoint is None:
        model = build_model(load_config(overrides=args.overrides)["model"])
    else:
        model, _ = model_from_args(args)
    model = model.eval() if args.no_fuse else model.fused()
    model.to(init_distributed(args.device).device)
    if args.sweep:
        settings = [{"hard_shares": (h, h / 2)} for h in args.sweep]
    elif args.hard_share:
        settings = [{"hard_shares": tuple(args.hard_share)}]
    else:
        settings = [{"rho": rho} for rho in (args.rho or [model.rho])]
    reports = [bench(model, tuple(args.size), batch=args.batch, warmup=args.warmup, reps=args.reps, **kw)
               for kw in settings]
    print_reports(reports, args.json, bench_table)
    return 0
