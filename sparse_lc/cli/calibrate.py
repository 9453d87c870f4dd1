"""``sparse-lc calibrate``: fit stage temperatures and choose (rho_1, rho_2) on data."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os

from .options import (
    add_config_argument,
    add_data_check_option,
    add_json_option,
    add_out_option,
    add_run_options,
    checked_dataset,
    model_from_args,
    parse_threshold,
)

SUMMARY = "fit stage temperatures and choose (rho_1, rho_2) on data"
DESCRIPTION = ("Fit one softmax temperature per stage on the calibration split (data.calib_split) by minimising NLL, "
               "then run the cascade at every threshold pair of a grid and choose: with --max-drop D the cheapest "
               "pair whose mIoU is within D points of the reference, with --budget B the most accurate pair whose "
               "MACs are at most B x the dense run's. Writes the choice beside the checkpoint "
               "(CKPT_STEM.calibration.json), where segment, eval, profile and bench pick it up, plus the explored "
               "points, their Pareto front and reliability diagrams to --out.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("checkpoint", help="checkpoint (.pth) to calibrate")
    goal = parser.add_mutually_exclusive_group()
    goal.add_argument("--max-drop", type=float, default=None,
                      help="mIoU points the cascade may lose against the reference (default: 1.0, unless --budget)")
    goal.add_argument("--budget", type=float, default=None, help="MACs allowed, as a fraction of the dense run")
    parser.add_argument("--reference", default=None, metavar="CKPT",
                        help="measure --max-drop from the dense run (rho = 1) of this checkpoint of the same config, "
                             "e.g. the dense baseline (default: this model's best on the grid)")
    parser.add_argument("--grid", type=parse_threshold, nargs="+", default=None, metavar="R",
                        help="thresholds to try for each of rho_1 and rho_2 (default: 0.5 ... 0.999 and 1)")
    add_out_option(parser, "folder for thresholds.json, pareto.png, reliability_s*.png "
                           "(default: CKPT_STEM_calibration)")
    add_json_option(parser, "the operating point as JSON instead of the table")
    add_data_check_option(parser)
    add_run_options(parser)


def run(args: argparse.Namespace) -> int:
    from ..apis import load_model
    from ..evaluation import DEFAULT_GRID, calibrate, evaluate, save_operating_point
    from ..utils.distributed import init_distributed
    from ..visualization import calibration_table, save_calibration_report

    info = init_distributed(args.device)
    model, cfg = model_from_args(args, calibrated=False)
    model.to(info.device)
    split = cfg["data"]["calib_split"]
    dataset = checked_dataset(cfg, args, train=False, split=split)
    reference_miou, reference = None, ""
    if args.reference:
        dense_model, _ = load_model(args.config, args.reference, args.overrides, calibrated=False)
        dense = evaluate(dense_model.to(info.device), dataset, [1.0], progress=not args.no_progress)[0]
        reference_miou, reference = dense.miou, f"dense run of {args.reference}"
    max_drop = 1.0 if args.max_drop is None and args.budget is None else args.max_drop
    report = calibrate(model, dataset, max_drop=max_drop, budget=args.budget, reference_miou=reference_miou,
                       reference=reference, grid=args.grid or DEFAULT_GRID, split=split,
                       progress=not args.no_progress)
    point_path = save_operating_point(report.operating_point, args.checkpoint)
    out = args.out or os.path.splitext(args.checkpoint)[0] + "_calibration"
    written = save_calibration_report(report, out, title=os.path.basename(args.config))
    if args.json:
        print(json.dumps(dataclasses.asdict(report.operating_point)))
    else:
        print(calibration_table(report))
        print("wrote " + ", ".join([point_path, *written]))
    return 0
