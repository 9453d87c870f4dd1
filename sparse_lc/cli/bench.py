"""``sparse-lc bench``: time the cascade against the same model run dense."""
from __future__ import annotations

import argparse
import statistics
import sys
import time

from .options import (
    add_cuda_graphs_option,
    add_device_option,
    add_json_option,
    add_model_options,
    add_precision_option,
    add_rho_option,
    at_least,
    batch_size,
    model_from_args,
    print_reports,
    say_cuda_graphs,
    set_cuda_graphs,
    share,
    tiling_from_args,
    to_precision,
)

SUMMARY = "time the cascade against the same model run dense"
DESCRIPTION = ("End-to-end speed: the cascade (sparse stages 2-3) against the same model with every stage on every "
               "pixel, per section (stage 1, 2, 3, assembly) and in total, with the MAC ratio as the limit, images "
               "per second and peak memory. Batch norm is folded into the convs first (both runs), unless "
               "--no-fuse. Hard pixels come from the model's confidences at --rho (a trained model), or from "
               "clustered synthetic masks of given shares (--hard-share, --sweep: any weights).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_options(parser, without_both="a random-weight ResNet-18 OS8, the default config")
    parser.add_argument("--size", type=at_least(1), nargs=2, default=[512, 512], metavar=("H", "W"), help="input size")
    parser.add_argument("--image", default=None, metavar="FILE",
                        help="time one image file at full resolution instead, tile by tile (as segment --max-side 0), "
                             "cascade against the same tiles run dense, with peak memory: one timed pass of each "
                             "after an untimed one-tile pass (--warmup 0: none); not with --compile")
    parser.add_argument("--tile", type=at_least(8), nargs=2, metavar=("H", "W"), default=None,
                        help="with --image: tile size (default: the config's train.crop_size, at least 512)")
    parser.add_argument("--stride", type=at_least(8), nargs=2, metavar=("H", "W"), default=None,
                        help="with --image: tile stride (default: 3/4 of the tile)")
    which = parser.add_mutually_exclusive_group()
    add_rho_option(which, many=True, default="the model's own confidences at its rho")
    which.add_argument("--hard-share", type=share, nargs=2, default=None, metavar=("H2", "H3"),
                       help="force clustered hard masks with these shares after stage 1 and 2")
    which.add_argument("--sweep", type=share, nargs="+", default=None, metavar="H2",
                       help="force clustered masks for each share h2 (h3 = h2 / 2) and compare stages 2-3 time "
                            "and MAC ratios")
    parser.add_argument("--batch", type=batch_size, default="auto",
                        help="images per forward pass (default: auto, 1 on the CPU; on CUDA each setting is timed at "
                             "batch 1 and at segment's automatic batch for the size, about 4 megapixels per pass)")
    parser.add_argument("--threads", type=at_least(1), default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--warmup", type=at_least(0), default=2, help="untimed passes of each kind")
    parser.add_argument("--reps", type=at_least(1), default=7, help="timed passes of each kind (median reported)")
    parser.add_argument("--no-fuse", action="store_true", help="keep batch norm separate")
    parser.add_argument("--compile", action="store_true",
                        help="run stage 1 through torch.compile (both runs; the compile time is said, not timed)")
    add_precision_option(parser)
    add_cuda_graphs_option(parser)
    add_json_option(parser, "one JSON object (a list for several settings)")
    add_device_option(parser)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..analysis import bench
    from ..apis import auto_batch
    from ..builder import build_model
    from ..config import load_config
    from ..errors import UsageError
    from ..utils.distributed import init_distributed
    from ..visualization import bench_table

    if args.image and args.compile:
        raise UsageError("--image with --compile: tiled runs count MACs, for which stage 1 runs eagerly, so nothing "
                         "compiled would be timed; leave out --compile")
    if args.hard_share and args.hard_share[1] > args.hard_share[0]:
        raise UsageError(f"--hard-share {args.hard_share[0]:g} {args.hard_share[1]:g}: the share after stage 2 (H3) "
                         f"cannot exceed the share after stage 1 (H2)")
    if args.threads:
        torch.set_num_threads(args.threads)
    source = "the given shares" if args.hard_share or args.sweep else "their arbitrary confidences (see --hard-share)"
    why = f": timing does not depend on them; the hard pixels come from {source}"
    if args.config is None and args.checkpoint is None:
        print(f"note: no --config and no --checkpoint: the default config's ResNet-18 OS8 with random weights{why}",
              file=sys.stderr)
        cfg = load_config(overrides=args.overrides)
        model = build_model(cfg["model"])
    else:
        model, cfg = model_from_args(args, random_weights=why)
    model = model.eval() if args.no_fuse else model.fused()
    model = to_precision(model.to(init_distributed(args.device).device), args, "both")
    set_cuda_graphs(model, args)
    device = next(model.parameters()).device
    tiling = tiling_from_args(cfg["train"]["crop_size"], args, args.batch, device) if args.image else None
    batches = [args.batch] if args.batch else sorted({1, auto_batch(*args.size, device)})
    if args.compile:
        start = time.perf_counter()
        model.compile_stage1()
        with torch.no_grad():
            for batch in batches:
                model(torch.zeros(batch, 3, *args.size, device=device), rho=1.0, execution="dense")
        print(f"note: stage 1 compiled in {time.perf_counter() - start:.1f} s (for this input size)", file=sys.stderr)
    if args.image:
        code = _bench_image(model, tiling, args)
        say_cuda_graphs(model)
        return code
    if args.sweep:
        settings = [{"hard_shares": (h, h / 2)} for h in args.sweep]
    elif args.hard_share:
        settings = [{"hard_shares": tuple(args.hard_share)}]
    else:
        settings = [{"rho": rho} for rho in (args.rho or [model.rho])]
    reports = [bench(model, tuple(args.size), batch=batch, warmup=args.warmup, reps=args.reps, **kw)
               for kw in settings for batch in batches]
    say_cuda_graphs(model)
    print_reports(reports, args.json, bench_table)
    return 0


def _bench_image(model, tiling, args: argparse.Namespace) -> int:
    """One full-resolution image, tile by tile: the cascade and the same tiles run dense,
    alternating, ``--warmup`` untimed passes of the whole image of each, then ``--reps`` timed
    ones (the median reported, with the spread); MACs, stage shares and peak memory (over the
    first timed pass) of each. Prints a table or (``--json``) one object."""
    import json

    import torch

    from ..analysis import DenseMacs, peak_memory, peak_rss
    from ..apis import segment_tiled
    from ..data import read_image

    image = read_image(args.image)
    rho = args.rho[0] if args.rho else None
    shares = tuple(args.hard_share) if args.hard_share else None
    runs = {"cascade": dict(rho=rho, hard_shares=shares), "dense": dict(rho=1.0, execution="dense")}
    dense_macs = DenseMacs(model)
    device = next(model.parameters()).device

    def tiled(kind: str):
        return segment_tiled(model, image, tile=tiling.tile, stride=tiling.stride, batch=tiling.batch,
                             dense_macs=dense_macs, **runs[kind])

    for _ in range(args.warmup):
        for kind in runs:
            tiled(kind)
    passes = {kind: [] for kind in runs}
    memory = {}
    for rep in range(args.reps):
        for kind in runs:
            if rep == 0:
                memory[kind] = peak_memory(lambda kind=kind: passes[kind].append(tiled(kind)), device)
            else:
                passes[kind].append(tiled(kind))
    report = {"image": args.image, "size": list(image.shape[:2]), "tile": list(tiling.tile),
              "stride": list(tiling.stride), "batch": tiling.batch, "threads": torch.get_num_threads(),
              "warmup": args.warmup, "reps": args.reps}
    for kind, results in passes.items():
        times = [r.seconds for r in results]
        report[kind] = {"seconds": statistics.median(times), "spread": max(times) - min(times), "times": times,
                        "macs": results[0].macs_cascade, "tiles": results[0].tiles,
                        "stage_shares": list(results[0].stage_shares), "peak_memory": int(memory[kind])}
    report["speedup"] = report["dense"]["seconds"] / report["cascade"]["seconds"]
    report["mac_ratio"] = report["dense"]["macs"] / report["cascade"]["macs"]
    report["peak_rss"] = peak_rss()
    print(json.dumps(report) if args.json else _image_table(report))
    return 0


def _image_table(report: dict) -> str:
    """The table of :func:`_bench_image`'s report."""
    c, d = report["cascade"], report["dense"]
    (height, width), (tile_h, tile_w), (stride_h, stride_w) = report["size"], report["tile"], report["stride"]
    lines = [f"{report['image']}: {width}x{height}, {c['tiles']} tiles of {tile_w}x{tile_h} (stride "
             f"{stride_w}x{stride_h}), {report['batch']} per batch, {report['threads']} threads; median of "
             f"{report['reps']} timed passes after {report['warmup']} untimed, cascade and dense alternating",
             f"{'run':<8} {'seconds':>8} {'spread':>7} {'GMACs':>9} {'stage 1':>8} {'stage 2':>8} {'stage 3':>8} "
             f"{'peak MiB':>9}"]
    for name, r in (("cascade", c), ("dense", d)):
        s1, s2, s3 = (100 * v for v in r["stage_shares"])
        lines.append(f"{name:<8} {r['seconds']:8.2f} {r['spread']:7.2f} {r['macs'] / 1e9:9.3f} {s1:7.1f}% {s2:7.1f}% "
                     f"{s3:7.1f}% {r['peak_memory'] / 2 ** 20:9.0f}")
    lines.append(f"speed-up {report['speedup']:.2f}x (dense time / cascade time; MAC ratio "
                 f"{report['mac_ratio']:.2f}x); peak memory of the process {report['peak_rss'] / 2 ** 20:.0f} MiB")
    return "\n".join(lines)
