"""``sparse-lc eval``: evaluate a checkpoint at one or more rho (under torchrun: sharded)."""
from __future__ import annotations

import argparse
import json
import os
import sys

from .options import (
    add_calibration_option,
    add_config_argument,
    add_data_check_option,
    add_json_option,
    add_out_option,
    add_precision_option,
    add_rho_option,
    add_run_options,
    checked_dataset,
    model_from_args,
    to_precision,
)

SUMMARY = "evaluate a checkpoint at one or more rho"
DESCRIPTION = ("mIoU, per-class IoU, accuracy, per-stage statistics and MACs on the validation split of CONFIG, for "
               "each rho (one trained model). Writes eval.json, rho_sweep.png and reliability_s*.png to --out.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("checkpoint", help="checkpoint (.pth) written by sparse-lc train")
    add_rho_option(parser, many=True, default="the calibrated rho if the checkpoint is calibrated, then eval.rhos "
                                               "of the config, else the model's rho and 1")
    add_calibration_option(parser)
    add_json_option(parser)
    add_out_option(parser, "folder for eval.json, rho_sweep.png and reliability_s*.png (default: CKPT_STEM_eval, "
                           "never the training run's own evaluation; what it replaces there is named on stderr)")
    add_data_check_option(parser)
    add_precision_option(parser)
    add_run_options(parser)


def run(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate
    from ..utils.distributed import init_distributed
    from ..visualization import eval_table, save_eval_report

    info = init_distributed(args.device)
    model, cfg = model_from_args(args)
    model = to_precision(model.to(info.device), args)
    rhos = args.rho or cfg["eval"]["rhos"] or [1.0]
    if not args.rho and (model.operating_point is not None or not cfg["eval"]["rhos"]):
        rhos = [model.rho] + [r for r in rhos if r != model.rho]  # the model's own threshold first
    dataset = checked_dataset(cfg, args, progress=info.is_main, train=False)
    results = evaluate(model, dataset, rhos, info, progress=not args.no_progress)
    if not info.is_main:
        return 0
    out = args.out or os.path.splitext(args.checkpoint)[0] + "_eval"
    before = set(os.listdir(out)) if os.path.isdir(out) else set()
    written = save_eval_report(results, out, title=os.path.basename(args.config), reliability_rho=model.rho)
    replaced = [os.path.basename(p) for p in written if os.path.basename(p) in before]
    if replaced:
        print(f"note: replaced {', '.join(replaced)} in {out} (from an earlier eval; --out writes elsewhere)",
              file=sys.stderr)
    if args.json:
        print(json.dumps([r.to_json() for r in results]))
    else:
        print(eval_table(results))
        print("wrote " + ", ".join(written))
    return 0
