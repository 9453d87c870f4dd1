"""``sparse-lc check-data``: walk a dataset and report every problem with its file."""
from __future__ import annotations

import argparse

from .options import add_config_argument, add_progress_option, config_from_args

SUMMARY = "report problems in a dataset"
DESCRIPTION = ("Walk the training and validation splits of CONFIG and report missing pairs, unreadable files, size "
               "mismatches and out-of-range labels, each with its path; the exit code is 1 if there is any.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_argument(parser)
    parser.add_argument("--split", choices=("train", "val", "both"), default="both", help="which split(s)")
    add_progress_option(parser)


def run(args: argparse.Namespace) -> int:
    from ..data import DataError, build_dataset, check_dataset

    cfg = config_from_args(args)
    splits = {"train": [True], "val": [False], "both": [True, False]}[args.split]
    problems, total = [], 0
    for train_split in splits:
        try:  # a split that cannot even be listed is one more problem; the other split is still checked
            dataset = build_dataset(cfg, train=train_split, require_files=False)
        except DataError as e:
            problems.append(str(e))
            continue
        total += len(dataset)
        problems += check_dataset(dataset, cfg["model"]["num_classes"], progress=not args.no_progress)
    for problem in problems:
        print(problem)
    print(f"checked {total} images: {len(problems)} problem(s)")
    return 1 if problems else 0
