"""``sparse-lc train``: train the model of a config (under torchrun: DDP)."""
from __future__ import annotations

import argparse
import os

from .options import add_config_argument, add_data_check_option, add_run_options, config_from_args

SUMMARY = "train a cascade (torchrun for DDP)"
DESCRIPTION = ("Train the model of CONFIG: deep supervision, then cascade fine-tuning (train.mode lc), or a baseline "
               "(dense, mc). Writes latest.pth, final.pth, log.jsonl, config.yaml and the final evaluation to "
               "work_dir. Under torchrun: DDP. Before anything is written, every data file is read once (remembered "
               "for the next run) and every problem reported; a work_dir that holds a run, or is in use by one, is "
               "refused. Ctrl-C says where to continue from (exit code 130).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--work-dir", default=None, help="where the run goes (default: work_dir of the config)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from work_dir/latest.pth; after the last iteration, complete what is missing")
    add_data_check_option(parser)
    add_run_options(parser)


def run(args: argparse.Namespace) -> int:
    from ..evaluation import EvalResult
    from ..training import train
    from ..visualization import eval_table

    summary = train(config_from_args(args), resume=args.resume, device=args.device, progress=not args.no_progress,
                    check_data=not args.skip_data_check)
    if int(os.environ.get("RANK", "0")) == 0:
        if not summary.completed:
            print(f"the run in {summary.work_dir} is complete ({summary.iterations} iterations, final.pth, "
                  f"evaluation): nothing to do")
            return 0
        print(f"done: {summary.iterations} iterations; weights in {summary.final_checkpoint}")
        if summary.evaluation:
            print(eval_table([EvalResult(**r) for r in summary.evaluation]))
    return 0
