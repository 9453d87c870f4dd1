"""What each ``sparse-lc`` subcommand does: wire library calls together and print the results.

Argument parsing lives in :mod:`sparse_lc.cli`; each ``cmd_*`` takes the parsed arguments and
returns the exit code.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import numpy as np
import torch

from .builder import build_model
from .cascade import format_rho
from .config import load_config
from .data import DataError, build_dataset, check_dataset, read_photo, render_scene
from .engine import (EvalResult, bench, calibrate, evaluate, profile_macs, save_calibration_report, save_eval_report,
                     segment_files, train)
from .engine.dist import init_distributed
from .engine.thresholds import DEFAULT_GRID
from .inference import prepare_images
from .loading import SAMPLES_DIR, class_names_and_palette, load_model
from .operating_point import save_operating_point
from .tables import bench_table, calibration_table, eval_table, profile_table, segment_table


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
