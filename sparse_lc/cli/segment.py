"""``sparse-lc segment``: segment image files and folders."""
from __future__ import annotations

import argparse
import json

from .options import (
    add_json_option,
    add_model_options,
    add_out_option,
    add_rho_option,
    add_run_options,
    at_least,
    model_from_args,
    report_failures,
)

SUMMARY = "segment image files or folders"
DESCRIPTION = ("Segment images (jpg, png, bmp, tif; 8 or 16 bit; gray, BGR or BGRA). Per image: NAME_label.png "
               "(class ids, palette PNG), NAME_overlay.jpg and NAME_stages.png (which stage decided each pixel). "
               "A file that cannot be read is reported and skipped; the exit code is then 1. Files segment did not "
               "write are never replaced unless --overwrite: their input is skipped with a message. Its own "
               "outputs (marked in their metadata) are never taken as inputs.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    add_model_options(parser, without_both="the bundled model", refuse_random=True)
    add_rho_option(parser)
    add_out_option(parser, "output folder", default="sparse_lc_out")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files at output paths that segment did not write (never this run's inputs)")
    parser.add_argument("--max-side", type=at_least(0, " (0: no limit)"), default=1024,
                        help="run images whose longer side exceeds this downscaled (outputs keep full size); 0: never")
    add_json_option(parser)
    parser.add_argument("--no-warmup", action="store_true",
                        help="do not run the first image once untimed first (its time then includes one-time set-up)")
    add_run_options(parser)


def run(args: argparse.Namespace) -> int:
    from ..apis import class_names_and_palette, segment_files
    from ..utils.distributed import init_distributed
    from ..visualization import segment_table

    model, cfg = model_from_args(args)
    model.to(init_distributed(args.device).device)
    _, palette = class_names_and_palette(cfg)
    records = segment_files(model, args.inputs, args.out, palette, args.rho, args.max_side,
                            progress=not args.no_progress, warmup=not args.no_warmup, overwrite=args.overwrite)
    print(json.dumps([r.to_json() for r in records]) if args.json else segment_table(records))
    return report_failures([f"{r.path}: {r.error}" for r in records if not r.ok], len(records))
