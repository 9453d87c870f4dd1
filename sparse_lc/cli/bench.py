"""``sparse-lc bench``: time the cascade against the same model run dense."""
from __future__ import annotations

import argparse
import sys

from .options import (
    add_device_option,
    add_json_option,
    add_model_options,
    add_rho_option,
    at_least,
    model_from_args,
    print_reports,
    share,
)

SUMMARY = "time the cascade against the same model run dense"
DESCRIPTION = ("End-to-end speed: the cascade (sparse stages 2-3) against the same model with every stage on every "
               "pixel, per section (stage 1, 2, 3, assembly) and in total, with the MAC ratio as the limit, images "
               "per second and peak memory. Batch norm is folded into the convs first (both runs), unless "
               "--no-fuse. Hard pixels come from the model's confidences at --rho (a trained model), or from "
               "clustered synthetic masks of given shares (--hard-share, --sweep: any weights).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser, without_both="a random-weight ResNet-18 OS8, the default config")
    parser.add_argument("--size", type=at_least(1), nargs=2, default=[512, 512], metavar=("H", "W"), help="input size")
    which = parser.add_mutually_exclusive_group()
    add_rho_option(which, many=True, default="the model's own confidences at its rho")
    which.add_argument("--hard-share", type=share, nargs=2, default=None, metavar=("H2", "H3"),
                       help="force clustered hard masks with these shares after stage 1 and 2")
    which.add_argument("--sweep", type=share, nargs="+", default=None, metavar="H2",
                       help="force clustered masks for each share h2 (h3 = h2 / 2) and compare stages 2-3 time "
                            "and MAC ratios")
    parser.add_argument("--batch", type=at_least(1), default=1, help="images per forward pass")
    parser.add_argument("--threads", type=at_least(1), default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--warmup", type=at_least(0), default=2, help="untimed passes of each kind")
    parser.add_argument("--reps", type=at_least(1), default=7, help="timed passes of each kind (median reported)")
    parser.add_argument("--no-fuse", action="store_true", help="keep batch norm separate")
    add_json_option(parser, "one JSON object (a list for several settings)")
    add_device_option(parser)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..analysis import bench
    from ..builder import build_model
    from ..config import load_config
    from ..errors import UsageError
    from ..utils.distributed import init_distributed
    from ..visualization import bench_table

    if args.hard_share and args.hard_share[1] > args.hard_share[0]:
        raise UsageError(f"--hard-share {args.hard_share[0]:g} {args.hard_share[1]:g}: the share after stage 2 (H3) "
                         f"cannot exceed the share after stage 1 (H2)")
    if args.threads:
        torch.set_num_threads(args.threads)
    source = "the given shares" if args.hard_share or args.sweep else "their arbitrary confidences (see --hard-share)"
    why = f": timing does not depend on them; the hard pixels come from {source}"
    if args.config is None and args.checkpoint is None:
        print(f"note: no --config and no --checkpoint: the default config's ResNet-18 OS8 with random weights{why}",
              file=sys.stderr)
        model = build_model(load_config(overrides=args.overrides)["model"])
    else:
        model, _ = model_from_args(args, random_weights=why)
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
