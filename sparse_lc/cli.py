"""The ``sparse-lc`` command: argument parsing and printing only; every action is a library call."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import List, Optional

import numpy as np
import torch

from . import __version__
from .builder import build_model
from .checkpoint import CheckpointError
from .cascade import Rho, format_rho
from .config import ConfigError, load_config
from .data import DataError, build_dataset, check_dataset, read_photo, render_scene
from .engine import (EvalResult, TrainingDiverged, bench, calibrate, evaluate, profile_macs, save_calibration_report,
                     save_eval_report, segment_files, train)
from .engine.dist import init_distributed
from .engine.thresholds import DEFAULT_GRID
from .inference import prepare_images
from .loading import SAMPLES_DIR, class_names_and_palette, load_model
from .operating_point import save_operating_point
from .tables import bench_table, calibration_table, eval_table, profile_table, segment_table


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


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
    cal.add_argument("--grid", type=float, nargs="+", default=None, metavar="R",
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


def _config(args: argparse.Namespace):
    cfg = load_config(args.config, args.overrides)
    if getattr(args, "work_dir", None):
        cfg["work_dir"] = args.work_dir
    return cfg


def cmd_demo(args: argparse.Namespace) -> int:
    model, cfg = load_model()
    _, palette = class_names_and_palette(cfg)
    records = segment_files(model, [SAMPLES_DIR], args.out, palette, args.rho, progress=not args.no_progress)
    rho = args.rho if args.rho is not None else model.rho
    print(f"bundled model: a {cfg['model']['backbone']} cascade trained on synthetic shapes, rho = {format_rho(rho)}")
    print(segment_table(records))
    batch = prepare_images(read_photo(records[0].path), model.pixel_mean, model.pixel_std, "bgr")
    with torch.no_grad():
        sparse, dense = (model(batch, rho=rho, execution=e) for e in ("sparse", "dense"))
    print(f"sparse and dense execution agree on {os.path.basename(records[0].path)}: "
          f"max |logit difference| = {float((sparse.logits - dense.logits).abs().max()):.1e}")
    print(f"pictures in {args.out}/: NAME_overlay.jpg, NAME_stages.png, NAME_label.png")
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    model, cfg = _load_model(args)
    model.to(init_distributed(args.device).device)
    _, palette = class_names_and_palette(cfg)
    records = segment_files(model, args.inputs, args.out, palette, args.rho, args.max_side,
                            progress=not args.no_progress, warmup=not args.no_warmup)
    print(json.dumps([r.to_json() for r in records]) if args.json else segment_table(records))
    failed = [r for r in records if not r.ok]
    for r in failed:
        print(f"{r.path}: {r.error}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} of {len(records)} input(s) failed", file=sys.stderr)
    return 1 if failed else 0


def _load_model(args: argparse.Namespace):
    """load_model with the command's arguments; says which calibration it applied (stderr)."""
    model, cfg = load_model(args.config, args.checkpoint, args.overrides, calibrated=not args.no_calibration)
    if model.operating_point is not None:
        print(f"calibrated: {model.operating_point.describe()}", file=sys.stderr)
    return model, cfg


def cmd_profile(args: argparse.Namespace) -> int:
    model, _ = _load_model(args)
    if args.input:
        pictures = [read_photo(path) for path in args.input]
    else:
        pictures = [render_scene(np.random.default_rng(0), tuple(args.size))[0]]
    images = [prepare_images(p, model.pixel_mean, model.pixel_std, "bgr") for p in pictures]
    reports = [profile_macs(model, images, rho) for rho in (args.rho or [model.rho])]
    if args.json:
        data = [r.to_json() for r in reports]
        print(json.dumps(data[0] if len(data) == 1 else data))
    else:
        print("\n\n".join(profile_table(r, args.layers) for r in reports))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.config is None and args.checkpoint is None:
        model = build_model(load_config(overrides=args.overrides)["model"])
    else:
        model, _ = _load_model(args)
    model = model.eval() if args.no_fuse else model.fused()
    model.to(init_distributed(args.device).device)
    if args.sweep:
        settings = [{"hard_shares": (h, h / 2)} for h in args.sweep]
    elif args.hard_share:
        settings = [{"hard_shares": tuple(args.hard_share)}]
    else:
        settings = [{"rho": rho} for rho in (args.rho or [model.rho])]
    reports = [bench(model, tuple(args.size), batch=args.batch, warmup=args.warmup, reps=args.reps, **kw)
               for kw in settings]
    if args.json:
        data = [r.to_json() for r in reports]
        print(json.dumps(data[0] if len(data) == 1 else data))
    else:
        print(bench_table(reports))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    summary = train(_config(args), resume=args.resume, device=args.device, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"done: {summary.iterations} iterations; weights in {summary.final_checkpoint}")
        if summary.evaluation:
            print(eval_table([EvalResult(**r) for r in summary.evaluation]))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    info = init_distributed(args.device)
    model, cfg = _load_model(args)
    model.to(info.device)
    rhos = args.rho or cfg["eval"]["rhos"] or [1.0]
    if not args.rho and (model.operating_point is not None or not cfg["eval"]["rhos"]):
        rhos = [model.rho] + [r for r in rhos if r != model.rho]  # the model's own threshold first
    results = evaluate(model, build_dataset(cfg, train=False), rhos, info, progress=not args.no_progress)
    if not info.is_main:
        return 0
    out = args.out or os.path.dirname(os.path.abspath(args.checkpoint))
    written = save_eval_report(results, out, title=os.path.basename(args.config))
    if args.json:
        print(json.dumps([r.to_json() for r in results]))
    else:
        print(eval_table(results))
        print("wrote " + ", ".join(written))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    info = init_distributed(args.device)
    model, cfg = load_model(args.config, args.checkpoint, args.overrides, calibrated=False)
    model.to(info.device)
    split = cfg["data"]["calib_split"]
    dataset = build_dataset(cfg, train=False, split=split)
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


def cmd_check_data(args: argparse.Namespace) -> int:
    cfg = _config(args)
    splits = {"train": [True], "val": [False], "both": [True, False]}[args.split]
    problems, total = [], 0
    for train_split in splits:
        try:  # a split that cannot even be listed is one more problem; the other split is still checked
            dataset = build_dataset(cfg, train=train_split, require_files=False)
        except DataError as e:
            problems.append(str(e))
            continue
        total += len(dataset)
        problems += check_dataset(dataset, cfg["model"]["num_classes"])
    for problem in problems:
        print(problem)
    print(f"checked {total} images: {len(problems)} problem(s)")
    return 1 if problems else 0


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
