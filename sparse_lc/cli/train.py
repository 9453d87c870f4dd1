"""``sparse-lc train``: train the model of a config (under torchrun: DDP)."""
from __future__ import annotations

import argparse
import os

from .options import add_config_argument, add_run_options, config_from_args

SUMMARY = "train a cascade (torchrun for DDP)"
DESCRIPTION = ("Train the model of CONFIG: deep supervision, then cascade fine-tuning (train.mode lc), or a baseline "
               "(dense, mc). Writes latest.pth, final.pth, log.jsonl, config.yaml and the final evaluation to "
               "work_dir. Under torchrun: DDP.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--work-dir", default=None, help="where the run goes (default: work_dir of the config)")
    parser.add_argument("--resume", action="store_true", help="continue from work_dir/latest.pth")
    add_run_options(parser)


def run(args: argparse.Namespace) -> int:
    from ..evaluation import EvalResult
    from ..training import train
    from ..visualization import eval_table

    summary = train(config_from_args(args), resume=args.resume, device=args.device, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"done: {summary.iterations} iterations; weights in {summary.final_checkpoint}")
        if summary.evaluation:
            print(eval_table([EvalResult(**r) for r in summary.evaluation]))
    return 0
