"""``python -m kernels_bench``: sparse vs dense 3x3 conv layers over a grid of settings.

Writes ``layers.csv``, ``layers.json`` and ``speedup.png`` to ``--out`` and prints a table.
Sparse and dense are timed in the same run with a fixed thread count: compare ratios, not
absolute times, across machines or runs.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
from typing import List, Optional

import torch
from tqdm import tqdm

from sparse_lc.analysis import PATTERNS

from .layer import LayerResult, bench_layer
from .plot import plot_speedups

SHARES = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m kernels_bench", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--channels", type=int, nargs="+", default=[64, 256, 512], help="C_in = C_out")
    p.add_argument("--dilations", type=int, nargs="+", default=[1, 2, 4], help="3x3 conv dilations")
    p.add_argument("--shares", type=float, nargs="+", default=list(SHARES), help="active shares h, in (0, 1]")
    p.add_argument("--patterns", nargs="+", choices=PATTERNS, default=list(PATTERNS), help="mask patterns")
    p.add_argument("--size", type=int, nargs=2, default=[64, 64], metavar=("H", "W"),
                   help="feature map (64x64 = a 512x512 image at output stride 8)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (fixed for the whole run)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs per measurement")
    p.add_argument("--reps", type=int, default=7, help="timed runs per measurement (median reported)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to run")
    p.add_argument("--out", default="kernels_bench_results", help="output folder")
    p.add_argument("--quick", action="store_true", help="a small grid (C=64, dilation 2, 3 shares) to check it runs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def write_outputs(results: List[LayerResult], out: str, header: dict) -> None:
    os.makedirs(out, exist_ok=True)
    rows = [r.to_json() for r in results]
    with open(os.path.join(out, "layers.json"), "w", encoding="utf-8") as f:
        json.dump({"machine": header, "results": rows}, f, indent=1)
    with open(os.path.join(out, "layers.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_speedups(results, os.path.join(out, "speedup.png"),
                  f"3x3 SubMConv2d vs dense conv, {header['map']} map, {header['threads']} threads")


def table(results: List[LayerResult]) -> str:
    """One row per setting; ``ops``: aten ops one sparse conv dispatches, ``launches``: the CUDA
    kernels it launches (sparse / dense; ``-`` on the CPU)."""
    lines = [f"{'C':>4} {'dil':>3} {'h%':>5} {'pattern':<9} {'dense ms':>8} {'sparse ms':>9} {'rulebook':>8} "
             f"{'speed-up':>8} {'all-in':>6} {'MAC ratio':>9} {'1/h':>6} {'time/MAC':>8} {'ops':>4} {'launches':>8}"]
    for r in results:
        launches = "-" if r.sparse_launches is None else f"{r.sparse_launches}/{r.dense_launches}"
        lines.append(f"{r.channels:>4} {r.dilation:>3} {100 * r.share:>5g} {r.pattern:<9} {r.dense_ms:8.2f} "
                     f"{r.sparse_ms:9.2f} {r.rulebook_ms:8.2f} {r.speedup:8.2f} {r.speedup_all_in:6.2f} "
                     f"{r.mac_ratio:9.2f} {1 / r.share:6.1f} {r.speedup / r.mac_ratio:8.2f} {r.sparse_aten_ops:>4} "
                     f"{launches:>8}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.channels, args.dilations, args.shares = [64], [2], [0.05, 0.2, 1.0]
    if not all(0 < h <= 1 for h in args.shares):
        print(f"python -m kernels_bench: error: --shares must lie in (0, 1], got {args.shares}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    grid = [(c, d, h, p) for c in args.channels for d in args.dilations for p in args.patterns for h in args.shares]
    results = [bench_layer(c, d, h, p, tuple(args.size), args.device, args.warmup, args.reps)
               for c, d, h, p in tqdm(grid, desc="kernels", disable=args.no_progress)]
    header = {"cpu": platform.processor() or platform.machine(), "threads": args.threads, "torch": torch.__version__,
              "map": f"{args.size[0]}x{args.size[1]}", "device": args.device}
    write_outputs(results, args.out, header)
    print(table(results))
    print(f"wrote {args.out}/layers.csv, layers.json, speedup.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
