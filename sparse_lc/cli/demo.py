"""``sparse-lc demo``: segment the bundled samples with the bundled model."""
from __future__ import annotations

import argparse
import os

from .options import add_out_option, add_progress_option, add_rho_option

SUMMARY = "segment the bundled samples with the bundled model"
DESCRIPTION = ("Segment the sample images shipped with sparse_lc using the bundled model (a small cascade trained "
               "on the synthetic dataset); print per-stage pixel shares and the MACs saved against the dense run, "
               "and check that sparse and dense execution agree.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_out_option(parser, "folder for the pictures", default="sparse_lc_demo")
    add_rho_option(parser, default="the bundled model's")
    add_progress_option(parser)


def run(args: argparse.Namespace) -> int:
    from ..apis import SAMPLES_DIR, class_names_and_palette, load_model, segment_files
    from ..data import read_photo
    from ..rho import format_rho
    from ..testing import sparse_dense_gap
    from ..utils import prepare_images
    from ..visualization import segment_table

    model, cfg = load_model()
    names, palette = class_names_and_palette(cfg)
    records = segment_files(model, [SAMPLES_DIR], args.out, palette, args.rho, progress=not args.no_progress,
                            names=names)
    rho = args.rho if args.rho is not None else model.rho
    print(f"bundled model: a {cfg['model']['backbone']} cascade trained on synthetic shapes, rho = {format_rho(rho)}")
    print(segment_table(records))
    batch = prepare_images(read_photo(records[0].path), model.pixel_mean, model.pixel_std, "bgr")
    difference, _ = sparse_dense_gap(model, batch, rho=rho)
    print(f"sparse and dense execution agree on {os.path.basename(records[0].path)}: "
          f"max |logit difference| = {difference:.1e}")
    print(f"pictures in {args.out}/: NAME_overlay.jpg, NAME_stages.png, NAME_label.png")
    return 0
