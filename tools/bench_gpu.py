#!/usr/bin/env python
"""``python tools/bench_gpu.py [--device cuda] [--out DIR] [--quick]``: the GPU table of
docs/benchmarks.md, the cascade against the same model run dense, every row in one run.

Rows: ResNet-18 OS8 (``configs/lc_resnet18_os8.yaml``, hard shares 20% / 10%) and
Inception-ResNet-v2 OS8 (``configs/lc_irnv2_voc12.yaml``, 40% / 20%), fp32 and fp16, 512 x 512
at batch 1 and 8 and 1024 x 2048 at batch 1; then an 8000 x 6000 image (a mosaic of the
bundled samples) cut into tiles as ``segment --max-side 0`` runs it, the cascade against the
same tiles dense. Each row is one ``sparse-lc bench ... --json`` in a process of its own (random
weights and forced clustered hard masks: the speed does not depend on training; CUDA graphs and
batch as bench's defaults). Every row's JSON goes to ``--out``, the table to stdout and
``--out/table.md``. ``--quick``: one small size (64 x 64, batch 2), a small mosaic and one timed
pass, to check that it runs (CPU).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Dict, List, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESNET18 = ("ResNet-18 OS8", ["--config", os.path.join(REPO, "configs", "lc_resnet18_os8.yaml")], ("0.2", "0.1"))
IRNV2 = ("IRNv2 OS8", ["--config", os.path.join(REPO, "configs", "lc_irnv2_voc12.yaml"),
                       "--set", "model.pretrained=null"], ("0.4", "0.2"))
FULL = {"sizes": [(512, 512, 1), (512, 512, 8), (1024, 2048, 1)], "mosaic": (6000, 8000), "reps": "7", "warmup": "2"}
QUICK = {"sizes": [(64, 64, 2)], "mosaic": (600, 800), "reps": "1", "warmup": "1"}


def rows(quick: bool) -> List[Tuple[str, List[str]]]:
    """(label, bench arguments) of every row of the table."""
    plan = QUICK if quick else FULL
    out = []
    for (name, model, shares), precisions in ((RESNET18, ("fp32", "fp16")), (IRNV2, ("fp16",))):
        for precision in precisions:
            for height, width, batch in plan["sizes"]:
                out.append((f"{name} | {height}x{width} | {batch} | {precision}",
                            [*model, "--size", str(height), str(width), "--batch", str(batch), "--precision", precision,
                             "--hard-share", *shares, "--warmup", plan["warmup"], "--reps", plan["reps"]]))
    return out


def write_mosaic(path: str, size: Tuple[int, int]) -> None:
    """The bundled samples tiled over ``size = (H, W)`` pixels, written to ``path``."""
    import cv2
    import numpy as np

    samples = os.path.join(REPO, "sparse_lc", "assets", "samples")
    pictures = [cv2.imread(os.path.join(samples, f)) for f in sorted(os.listdir(samples)) if f.endswith(".png")]
    row = np.concatenate(pictures, axis=1)
    mosaic = np.tile(row, (-(-size[0] // row.shape[0]), -(-size[1] // row.shape[1]), 1))[:size[0], :size[1]]
    cv2.imwrite(path, mosaic)


def bench(arguments: List[str], device: str) -> Dict:
    """One ``sparse-lc bench --json`` run in a fresh process; its report."""
    proc = subprocess.run([sys.executable, "-m", "sparse_lc", "bench", *arguments, "--device", device, "--json"],
                          capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"bench {' '.join(arguments)}: exit code {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/bench_gpu.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="where to run (default: cuda)")
    parser.add_argument("--out", default="bench_gpu_results", help="folder for the JSON reports and table.md")
    parser.add_argument("--quick", action="store_true", help="one small size, one timed pass: check that it runs")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    lines = ["| model | size | batch | dtype | dense ms | cascade ms | speed-up | MAC ratio | cascade images/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for number, (label, arguments) in enumerate(rows(args.quick)):
        report = bench(arguments, args.device)
        with open(os.path.join(args.out, f"row{number}.json"), "w", encoding="utf-8") as f:
            json.dump(report, f)
        lines.append(f"| {label} | {1e3 * report['dense_s']:.2f} | {1e3 * report['sparse_s']:.2f} | "
                     f"{report['speedup']:.2f}x | {report['ideal_speedup']:.2f}x | "
                     f"{report['images_per_s_sparse']:.1f} |")
        print(lines[-1], flush=True)
    plan = QUICK if args.quick else FULL
    mosaic = os.path.join(os.path.abspath(args.out), "mosaic.png")
    write_mosaic(mosaic, plan["mosaic"])
    tiled = bench([*RESNET18[1], "--image", mosaic, "--hard-share", *RESNET18[2], "--warmup", plan["warmup"],
                   "--reps", plan["reps"]], args.device)
    with open(os.path.join(args.out, "tiled.json"), "w", encoding="utf-8") as f:
        json.dump(tiled, f)
    height, width = plan["mosaic"]
    lines += ["", "| tiled image | tiles | dense s | cascade s | speed-up | MAC ratio |", "|---|---|---|---|---|---|",
              f"| {width}x{height}, {RESNET18[0]}, hard 20%/10% per tile | {tiled['cascade']['tiles']} | "
              f"{tiled['dense']['seconds']:.2f} | {tiled['cascade']['seconds']:.2f} | {tiled['speedup']:.2f}x | "
              f"{tiled['mac_ratio']:.2f}x |"]
    table = "\n".join(lines)
    with open(os.path.join(args.out, "table.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    print("\n".join(lines[-4:]))
    print(f"wrote {args.out}/table.md and the JSON of every row")
    return 0


if __name__ == "__main__":
    from sparse_lc.cli.entry import drop_script_folder

    drop_script_folder(__file__)
    sys.exit(main())
