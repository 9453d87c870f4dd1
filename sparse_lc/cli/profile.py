"""``sparse-lc profile``: MACs of the cascade against the dense run, per stage and layer."""
from __future__ import annotations

import argparse

from .options import (
    add_json_option,
    add_model_options,
    add_precision_option,
    add_rho_option,
    at_least,
    input_files,
    model_from_args,
    print_reports,
    report_failures,
    to_precision,
)

SUMMARY = "MACs of the cascade against the dense run"
DESCRIPTION = ("Per stage (and with --layers per layer): MACs of the dense run and of the cascade, the active-pixel "
               "share and the ratio, as means over the images. --input takes files and folders, as segment does; a "
               "file that cannot be read is reported and skipped (exit code 1).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser, without_both="the bundled model")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", metavar="IMG", help="image files or folders to profile on")
    source.add_argument("--size", type=at_least(1), nargs=2, metavar=("H", "W"), help="a generated image of this size")
    add_rho_option(parser, many=True)
    add_json_option(parser, "one JSON object (a list for several --rho)")
    parser.add_argument("--layers", action="store_true", help="print every layer, not only the stages")
    add_precision_option(parser)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..analysis import profile_macs
    from ..data import DataError, read_photo, render_scene
    from ..utils import prepare_images
    from ..visualization import profile_table

    model, _ = model_from_args(args, random_weights=": the dense run's MACs do not depend on them, the cascade's "
                                                   "depend on where their confidences fall")
    model = to_precision(model, args, "both")
    failed = []
    if args.input:
        pictures = []
        for path in input_files(args.input, failed):
            try:
                pictures.append(read_photo(path))
            except DataError as e:
                failed.append(str(e))
        if not pictures:
            raise DataError(f"--input {' '.join(args.input)}: no image could be read", details=failed)
    else:
        pictures = [render_scene(np.random.default_rng(0), tuple(args.size))[0]]
    images = [prepare_images(p, model.pixel_mean, model.pixel_std, "bgr") for p in pictures]
    reports = [profile_macs(model, images, rho) for rho in (args.rho or [model.rho])]
    print_reports(reports, args.json, lambda rs: "\n\n".join(profile_table(r, args.layers) for r in rs))
    return report_failures(failed, len(failed) + len(pictures))
