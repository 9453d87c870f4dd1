"""The ``sparse-lc`` command: argument parsing only; :mod:`sparse_lc.commands` does the work."""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from . import __version__
from .cascade import Rho
from .checkpoint import CheckpointError
from .commands import (cmd_bench, cmd_calibrate, cmd_check_data, cmd_demo, cmd_eval, cmd_profile, cmd_segment,
                       cmd_train)
from .config import ConfigError
from .data import DataError
from .engine import TrainingDiverged


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def parse_threshold(text: str) -> float:
    """One threshold in [0, 1] (the values of ``calibrate --grid``)."""
    rho = parse_rho(text)
    if isinstance(rho, tuple):
        raise argparse.ArgumentTypeError(f"{text!r}: one threshold in [0, 1] per value")
    return rho


def parse_rho(text: str) -> Rho:
    """``"0.9"`` -> 0.9; ``"0.9,0.99"`` -> (0.9, 0.99): rho_1 (stage 1 -> 2), rho_2 (2 -> 3)."""
    try:
        values = [float(v) for v in text.split(",")]
        if len(values) > 2 or not all(0.0 <= v <= 1.0 for v in values):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a threshold is R or R1,R2 with values in [0, 1]") from None
    return values[0] if len(values) == 1 else tuple(values)


RHO_HELP = "R, or R1,R2 for stage 1 -> 2 and 2 -> 3"


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set model.rho=0.9 (repeatable)")


def _add_config_and_checkpoint(parser: argparse.ArgumentParser, checkpoint_help: str) -> None:
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("checkpoint", help=checkpoint_help)
    _add_overrides(parser)


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None,
                        help="YAML config (default: the checkpoint's own, or the bundled model's)")
    parser.add_argument("--checkpoint", default=None, help="weights .pth (default: the bundled model)")
    _add_overrides(parser)
    _add_no_calibration(parser)


def _add_no_calibration(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-calibration", action="store_true",
                        help="ignore the temperatures and thresholds `sparse-lc calibrate` saved beside the checkpoint")


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to run (auto: CUDA when available)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _parser(sub, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, formatter_class=_Formatter, help=summary, description=description)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparse-lc", formatter_class=_Formatter,
        description="Deep layer cascade segmentation: easy pixels stop early, hard pixels go on "
                    "through spconv submanifold stages.")
    parser.add_argument("--version", action="version", version=f"sparse-lc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = _parser(sub, "demo", "segment the bundled samples with the bundled model",
                   "Segment the sample images shipped with sparse_lc using the bundled model (a small "
                   "cascade trained on the synthetic dataset); print per-stage pixel shares and the MACs "
                   "saved against the dense run, and check that sparse and dense execution agree.")
    demo.add_argument("--out", default="sparse_lc_demo", help="folder for the pictures")
    demo.add_argument("--rho", type=parse_rho, default=None, help=f"threshold, {RHO_HELP} (default: the model's)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.set_defaults(func=cmd_demo)

    seg = _parser(sub, "segment", "segment image files or folders",
                  "Segment images (jpg, png, bmp, tif; 8 or 16 bit; gray, BGR or BGRA). Per image: "
                  "NAME_label.png (class ids, palette PNG), NAME_overlay.jpg and NAME_stages.png (which "
                  "stage decided each pixel). Without --config and --checkpoint: the bundled model. A file "
                  "that cannot be read is reported and skipped; the exit code is then 1.")
    seg.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    _add_model_args(seg)
    seg.add_argument("--rho", type=parse_rho, default=None, help=f"threshold, {RHO_HELP} (default: the model's)")
    seg.add_argument("--out", default="sparse_lc_out", help="output folder")
    seg.add_argument("--max-side", type=int, default=1024,
                     help="run images whose longer side exceeds this downscaled (outputs keep full size); 0: never")
    seg.add_argument("--json", action="store_true", help="print one JSON list instead of the table")
    seg.add_argument("--no-warmup", action="store_true",
                     help="do not run each new image size once untimed first (faster for folders of many "
                          "sizes; the times then include one-time set-up)")
    _add_run_args(seg)
    seg.set_defaults(func=cmd_segment)

    prof = _parser(sub, "profile", "MACs of the cascade against the dense run",
                   "Per stage (and with --layers per layer): MACs of the dense run and of the cascade, the "
                   "active-pixel share and the ratio, as means over the images. Without --config and "
                   "--checkpoint: the bundled model.")
    _add_model_args(prof)
    source = prof.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", metavar="IMG", help="image file(s) to profile on")
    source.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="a generated image of this size")
    prof.add_argument("--rho", type=parse_rho, nargs="+", default=None,
                      help=f"threshold(s), each {RHO_HELP} (default: the model's)")
    prof.add_argument("--json", action="store_true", help="print one JSON object (a list for several --rho)")
    prof.add_argument("--layers", action="store_true", help="print every layer, not only the stages")
    prof.set_defaults(func=cmd_profile)

    bench_p = _parser(sub, "bench", "time the cascade against the same model run dense",
                      "End-to-end speed: the cascade (sparse stages 2-3) against the same model with every "
                      "stage on every pixel, per section (stage 1, 2, 3, assembly) and in total, with the MAC "
                      "ratio as the limit, images per second and peak memory. Batch-norm is folded into the "
                      "convs first (both runs), unless --no-fuse. Without --config and --checkpoint: the "
                      "default ResNet-18 OS8 config (random weights; use --hard-share, or a trained "
                      "--checkpoint with --rho).")
    _add_model_args(bench_p)
    bench_p.add_argument("--size", type=int, nargs=2, default=[512, 512], metavar=("H", "W"), help="input size")
    which = bench_p.add_mutually_exclusive_group()
    which.add_argument("--rho", type=parse_rho, nargs="+", default=None,
                       help=f"use the model's own confidences at these thresholds, each {RHO_HELP}")
    which.add_argument("--hard-share", type=float, nargs=2, default=None, metavar=("H2", "H3"),
                       help="force clustered hard masks with these shares after stage 1 and 2")
    which.add_argument("--sweep", type=float, nargs="+", default=None, metavar="H2",
                       help="force clustered masks for each share h2 (h3 = h2 / 2) and compare stages 2-3 "
                            "time and MAC ratios")
    bench_p.add_argument("--batch", type=int, default=1, help="images per forward pass")
    bench_p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    bench_p.add_argument("--warmup", type=int, default=2, help="untimed passes of each kind")
    bench_p.add_argument("--reps", type=int, default=7, help="timed passes of each kind (median reported)")
    bench_p.add_argument("--no-fuse", action="store_true", help="keep batch norm separate")
    bench_p.add_argument("--json", action="store_true", help="print one JSON object (a list for several settings)")
    bench_p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run")
    bench_p.set_defaults(func=cmd_bench)

    tr = _parser(sub, "train", "train a cascade (torchrun for DDP)",
                 "Train the model of CONFIG: deep supervision, then cascade fine-tuning (train.mode lc), "
                 "or a baseline (dense, mc). Writes latest.pth, final.pth, log.jsonl, config.yaml and the "
                 "final evaluation to work_dir. Under torchrun: DDP.")
    tr.add_argument("config", help="YAML config file")
    _add_overrides(tr)
    tr.add_argument("--work-dir", default=None, help="override work_dir of the config")
    tr.add_argument("--resume", action="store_true", help="continue from work_dir/latest.pth")
    _add_run_args(tr)
    tr.set_defaults(func=cmd_train)

    ev = _parser(sub, "eval", "evaluate a checkpoint at one or more rho",
                 "mIoU, per-class IoU, accuracy, per-stage statistics and MACs on the validation split of "
                 "CONFIG, for each rho (one trained model). Writes eval.json and rho_sweep.png.")
    _add_config_and_checkpoint(ev, "checkpoint (.pth) written by sparse-lc train")
    ev.add_argument("--rho", type=parse_rho, nargs="+", default=None,
                    help=f"thresholds, each {RHO_HELP} (default: the calibrated rho if the checkpoint is calibrated, "
                         "then eval.rhos of the config, else the model's rho and 1)")
    _add_no_calibration(ev)
    ev.add_argument("--json", action="store_true", help="print one JSON list instead of the table")
    ev.add_argument("--out", default=None, help="folder for eval.json and rho_sweep.png (default: the checkpoint's)")
    _add_run_args(ev)
    ev.set_defaults(func=cmd_eval)

    cal = _parser(sub, "calibrate", "fit stage temperatures and choose (rho_1, rho_2) on data",
                  "Fit one softmax temperature per stage on the calibration split (data.calib_split) by "
                  "minimising NLL, then run the cascade at every threshold pair of a grid and choose: with "
                  "--max-drop D the cheapest pair whose mIoU is within D points of the reference, with "
                  "--budget B the most accurate pair whose MACs are at most B x the dense run's. Writes the "
                  "choice beside the checkpoint (CKPT_STEM.calibration.json), where segment, eval, profile "
                  "and bench pick it up, plus the explored points, their Pareto front and reliability "
                  "diagrams to --out.")
    _add_config_and_checkpoint(cal, "checkpoint (.pth) to calibrate")
    goal = cal.add_mutually_exclusive_group()
    goal.add_argument("--max-drop", type=float, default=None,
                      help="mIoU points the cascade may lose against the reference (default 1.0)")
    goal.add_argument("--budget", type=float, default=None, help="MACs allowed, as a fraction of the dense run")
    cal.add_argument("--reference", default=None, metavar="CKPT",
                     help="measure --max-drop from the dense run (rho = 1) of this checkpoint of the same config, "
                          "e.g. the dense baseline (default: this model's best on the grid)")
    cal.add_argument("--grid", type=parse_threshold, nargs="+", default=None, metavar="R",
                     help="thresholds to try for each of rho_1 and rho_2 (default: 0.5 ... 0.999 and 1)")
    cal.add_argument("--out", default=None,
                     help="folder for thresholds.json, pareto.png, reliability_s*.png (default: CKPT_STEM_calibration)")
    cal.add_argument("--json", action="store_true", help="print the operating point as JSON instead of the table")
    _add_run_args(cal)
    cal.set_defaults(func=cmd_calibrate)

    check = _parser(sub, "check-data", "report problems in a dataset",
                    "Walk the training and validation splits of CONFIG and report missing pairs, unreadable "
                    "files, size mismatches and out-of-range labels, each with its path.")
    check.add_argument("config", help="YAML config file")
    _add_overrides(check)
    check.add_argument("--split", choices=("train", "val", "both"), default="both", help="which split(s)")
    check.set_defaults(func=cmd_check_data)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except TrainingDiverged as e:
        if int(os.environ.get("RANK", "0")) == 0:  # every process stops; one says why
            print(f"sparse-lc {args.command}: {e}", file=sys.stderr)
        return 1
    except (ConfigError, CheckpointError, DataError, ValueError) as e:
        print(f"sparse-lc {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2


def _one_line(error: Exception) -> str:
    """The message of ``error``; for one re-raised from a DataLoader worker (whose message holds
    the worker's traceback), the original message only."""
    text = str(error).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return text


if __name__ == "__main__":
    sys.exit(main())
