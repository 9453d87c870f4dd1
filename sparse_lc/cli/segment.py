"""``sparse-lc segment``: segment image files and folders."""
from __future__ import annotations

import argparse
import json
import time

from .options import (
    add_cuda_graphs_option,
    add_json_option,
    add_model_options,
    add_out_option,
    add_precision_option,
    add_rho_option,
    add_run_options,
    at_least,
    batch_size,
    model_from_args,
    report_failures,
    say_cuda_graphs,
    set_cuda_graphs,
    tiling_from_args,
    to_precision,
)

SUMMARY = "segment image files or folders"
DESCRIPTION = ("Segment images (jpg, png, bmp, tif; 8 or 16 bit; gray, BGR or BGRA). Per image: NAME_label.png "
               "(class ids, palette PNG), NAME_overlay.jpg and NAME_stages.png (which stage decided each pixel). "
               "A file that cannot be read is reported and skipped; the exit code is then 1. Files segment did not "
               "write are never replaced unless --overwrite: their input is skipped with a message. Its own "
               "outputs (marked in their metadata) are never taken as inputs. --max-side 0 segments at full "
               "resolution: an image larger than a tile goes through the cascade tile by tile, logits averaged "
               "where tiles overlap, in bounded memory.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    add_model_options(parser, without_both="the bundled model", refuse_random=True)
    add_rho_option(parser)
    add_out_option(parser, "output folder", default="sparse_lc_out")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files at output paths that segment did not write (never this run's inputs)")
    parser.add_argument("--max-side", type=at_least(0, " (0: full resolution)"), default=1024,
                        help="run images whose longer side exceeds this downscaled (outputs keep full size); 0: full "
                             "resolution, images larger than a tile cut into tiles")
    parser.add_argument("--tile", type=at_least(8), nargs=2, metavar=("H", "W"), default=None,
                        help="with --max-side 0: tile size, multiples of 8 (default: the config's train.crop_size, "
                             "at least 512)")
    parser.add_argument("--stride", type=at_least(8), nargs=2, metavar=("H", "W"), default=None,
                        help="with --max-side 0: tile stride, multiples of 8 (default: 3/4 of the tile)")
    parser.add_argument("--tile-batch", type=batch_size, default="auto",
                        help="tiles per forward pass (default: auto, 4 on the CPU, on CUDA as --batch-size's rule)")
    parser.add_argument("--batch-size", type=batch_size, default="auto",
                        help="consecutive images of one size per forward pass, their MACs and time shared out evenly "
                             "in the table (default: auto, 1 on the CPU, on CUDA about 4 megapixels per pass, at "
                             "most 16 images)")
    parser.add_argument("--workers", type=at_least(1), default=2,
                        help="threads that read images ahead and write the pictures, off the model's thread")
    parser.add_argument("--dense", action="store_true",
                        help="run the same model dense (every stage on every pixel, rho = 1), for comparison")
    add_precision_option(parser)
    add_cuda_graphs_option(parser)
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
    execution = "dense" if args.dense else "sparse"
    model = to_precision(model, args, execution)
    set_cuda_graphs(model, args)
    names, palette = class_names_and_palette(cfg)
    tiling = tiling_from_args(cfg["train"]["crop_size"], args, args.tile_batch, next(model.parameters()).device)
    start = time.perf_counter()
    records = segment_files(model, args.inputs, args.out, palette, args.rho, args.max_side,
                            progress=not args.no_progress, warmup=not args.no_warmup, overwrite=args.overwrite,
                            tiling=tiling, batch_size=args.batch_size, workers=args.workers,
                            execution=execution, names=names)
    seconds = time.perf_counter() - start
    say_cuda_graphs(model)
    print(json.dumps([r.to_json() for r in records]) if args.json else segment_table(records))
    done = sum(r.ok for r in records)
    if not args.json and done:
        print(f"{done} images in {seconds:.1f} s: {done / seconds:.2f} images/s (reading and writing included)")
    return report_failures([f"{r.path}: {r.error}" for r in records if not r.ok], len(records))
