"""Plain-text tables of results, as the command line prints them."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, List, Optional

from ..rho import format_rho

if TYPE_CHECKING:  # result types only: tables format them, never build them
    from ..analysis import BenchReport, ProfileReport
    from ..apis import SegmentRecord
    from ..evaluation import CalibrationReport, EvalResult


def _pct(value: Optional[float]) -> str:
    return "  -  " if value is None else f"{100 * value:5.1f}"


def eval_table(results: List[EvalResult]) -> str:
    """One row per rho; ECE (%) per stage is with the model's temperatures, and is followed by
    the uncalibrated ECE when the model is calibrated."""
    calibrated = any(t != 1.0 for t in results[0].temperatures)
    ece_head = "ECE s1/s2/s3" + (" (uncalibrated)" if calibrated else "")
    lines = [f"{'rho':>10} {'mIoU':>6} {'pixAcc':>6} | {'share s1':>8} {'s2':>5} {'s3':>5} | {'acc s1':>6} "
             f"{'s2':>5} {'s3':>5} | {'bnd s2-3':>8} | {'GMACs':>7} {'dense':>7} {'ratio':>6} | {ece_head}"]
    for r in results:
        ece = "/".join(_pct(e).strip() for e in r.ece)
        if calibrated:
            ece += " (" + "/".join(_pct(e).strip() for e in r.ece_uncalibrated) + ")"
        lines.append(f"{format_rho(r.rho):>10} {_pct(r.miou):>6} {_pct(r.pixel_acc):>6} | {_pct(r.stage_share[0]):>8} "
                     f"{_pct(r.stage_share[1])} {_pct(r.stage_share[2])} | {_pct(r.stage_accuracy[0]):>6} "
                     f"{_pct(r.stage_accuracy[1])} {_pct(r.stage_accuracy[2])} | {_pct(r.boundary_share):>8} | "
                     f"{r.macs_cascade / 1e9:7.3f} {r.macs_dense / 1e9:7.3f} {r.macs_dense / r.macs_cascade:5.2f}x | "
                     f"{ece}")
    return "\n".join(lines)


def calibration_table(report: CalibrationReport) -> str:
    """Temperatures and ECE per stage, the reference, the chosen pair and single-rho alternatives."""
    point = report.operating_point
    lines = [f"calibration on {point.num_images} images of the {point.split} split (halo {point.halo})",
             f"{'stage':<6} {'T':>7} {'ECE before':>11} {'after':>7}"]
    for k, (t, before, after) in enumerate(zip(point.temperatures, point.ece_before, point.ece_after), start=1):
        lines.append(f"{k:<6} {t:7.3f} {_pct(before):>10}% {_pct(after):>6}%")
    lines.append(f"reference: {100 * point.reference_miou:.1f} mIoU ({point.reference})")
    lines.append(f"{'':<24} {'rho':>12} {'mIoU':>6} {'MACs':>7} | {'share s1':>8} {'s2':>5} {'s3':>5}")
    single = sorted((p for p in report.points if p.rho[0] == p.rho[1]), key=lambda p: p.rho[0])
    rows = [(f"chosen ({point.criterion})", report.chosen)]
    rows += [("one rho for both", p) for p in single if p.rho[0] in (0.9, 0.95, 0.985, 0.99, 0.995)]
    for name, p in rows:
        lines.append(f"{name:<24} {format_rho(p.rho):>12} {_pct(p.miou):>6} {_pct(p.macs_ratio):>6}% | "
                     f"{_pct(p.stage_share[0]):>8} {_pct(p.stage_share[1])} {_pct(p.stage_share[2])}")
    lines.append(f"MACs: % of the dense run ({report.chosen.macs_dense / 1e9:.3f} GMACs per image); "
                 f"{len(report.points)} pairs explored, {len(report.front)} on the Pareto front")
    return "\n".join(lines)


def segment_table(records: List[SegmentRecord]) -> str:
    done = [r for r in records if r.ok]
    if not done:
        return "no image segmented"
    width = max(len("image"), *(len(os.path.basename(r.path)) for r in done))
    lines = [f"{'image':<{width}} {'size':>9} {'ms':>7} {'stage 1':>8} {'stage 2':>8} {'stage 3':>8} "
             f"{'GMACs':>8} {'dense':>8} {'saved':>6}"]
    for r in done:
        s1, s2, s3 = (100 * s for s in r.stage_shares)
        lines.append(f"{os.path.basename(r.path):<{width}} {f'{r.width}x{r.height}':>9} {1e3 * r.seconds:7.1f} "
                     f"{s1:7.1f}% {s2:7.1f}% {s3:7.1f}% {r.macs_cascade / 1e9:8.3f} {r.macs_dense / 1e9:8.3f} "
                     f"{r.macs_dense / r.macs_cascade:5.1f}x")
    if len(done) > 1:
        cascade, dense = sum(r.macs_cascade for r in done), sum(r.macs_dense for r in done)
        lines.append(f"{len(done)} images: the cascade did {cascade / 1e9:.3f} GMACs where the dense model "
                     f"does {dense / 1e9:.3f} ({dense / cascade:.1f}x fewer)")
    return "\n".join(lines)


def profile_table(report: ProfileReport, layers: bool) -> str:
    rows = [(x.name, x.dense_macs, x.sparse_macs, x.active_fraction) for x in report.layers] if layers else []
    rows += [(s.name, s.dense_macs, s.sparse_macs, s.active_fraction) for s in report.stages]
    rows.append(("total", report.dense_macs, report.sparse_macs, None))
    width = max(len("layer / stage"), *(len(r[0]) for r in rows))
    lines = [f"rho = {format_rho(report.rho)}, mean over {report.num_images} image(s)",
             f"{'layer / stage':<{width}} {'dense MMACs':>12} {'cascade MMACs':>14} {'active':>7} {'ratio':>7}"]
    for name, dense, sparse, active in rows:
        ratio = f"{dense / sparse:6.1f}x" if sparse else "skipped"
        share = "" if active is None else f"{100 * active:6.1f}%"
        lines.append(f"{name:<{width}} {dense / 1e6:12.2f} {sparse / 1e6:14.2f} {share:>7} {ratio:>7}")
    return "\n".join(lines)


def _mib(value: int) -> str:
    return f"{value / 2 ** 20:.0f} MiB"


def bench_table(reports: List[BenchReport]) -> str:
    """Per setting: times per section and in total, the speed-ups and their MAC limits."""
    first = reports[0]
    lines = [f"input {first.size[0]}x{first.size[1]}, batch {first.batch}, {first.threads} threads; "
             f"medians (ms) of timed passes, sparse and dense alternating"]
    for r in reports:
        lines.append(f"\n{r.setting}")
        lines.append(f"{'section':<9} {'dense ms':>9} {'sparse ms':>9} {'speed-up':>8} {'active':>7}")
        for s in r.stages:
            speedup = f"{s.dense_s / s.sparse_s:7.2f}x" if s.sparse_s > 0 else "       -"
            lines.append(f"{s.name:<9} {1e3 * s.dense_s:9.1f} {1e3 * s.sparse_s:9.1f} {speedup} "
                         f"{100 * s.active_fraction:6.1f}%")
        lines.append(f"{'total':<9} {1e3 * r.dense_s:9.1f} {1e3 * r.sparse_s:9.1f} {r.speedup:7.2f}x   "
                     f"(MAC limit {r.ideal_speedup:.2f}x; spread {1e3 * r.dense_iqr_s:.1f} / "
                     f"{1e3 * r.sparse_iqr_s:.1f} ms)")
        s23 = r.stage23
        if s23["mac_ratio"] is None:
            lines.append("stages 2-3: no hard pixel, skipped")
        else:
            lines.append(f"stages 2-3: {s23['speedup']:.2f}x faster, MAC ratio {s23['mac_ratio']:.2f}x: "
                         f"{100 * s23['efficiency']:.0f}% of the limit; "
                         f"{100 * s23['spconv_s'] / s23['sparse_s']:.0f}% of their sparse time is inside "
                         f"spconv's convolutions")
        lines.append(f"images/s: dense {r.images_per_s_dense:.2f}, cascade {r.images_per_s_sparse:.2f}; "
                     f"peak memory above resting: dense {_mib(r.peak_mem_dense)}, cascade {_mib(r.peak_mem_sparse)}")
    return "\n".join(lines)
