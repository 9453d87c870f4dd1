"""Plots of results: rho sweeps, reliability diagrams, the thresholds' Pareto front (PNG files)."""
from __future__ import annotations

from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..cascade import format_rho, rho_pair  # noqa: E402
from ..evaluation import EvalResult, Reliability, ThresholdPoint  # noqa: E402

STAGE_COLOURS = ("#4c72b0", "#dd8452", "#c44e52")


def plot_rho_sweep(results: Sequence[EvalResult], path: str, title: str = "") -> None:
    """Left: mIoU against GMACs per image, one point per rho, the dense model's MACs dashed.
    Right: the share of pixels each stage decided, per rho. Saved as a PNG at ``path``."""
    results = sorted(results, key=lambda r: rho_pair(r.rho))
    fig, (ax_curve, ax_share) = plt.subplots(1, 2, figsize=(11, 4.2))
    gmacs = [r.macs_cascade / 1e9 for r in results]
    miou = [100 * r.miou for r in results]
    ax_curve.plot(gmacs, miou, "o-", color="#333333")
    for i, (r, x, y) in enumerate(zip(results, gmacs, miou)):  # alternate sides: close points stay legible
        ax_curve.annotate(f"rho={format_rho(r.rho)}", (x, y), textcoords="offset points", fontsize=8,
                          xytext=(6, -12 + 14 * (i % 2)), ha="left")
    ax_curve.axvline(results[0].macs_dense / 1e9, ls="--", color="grey", label="dense model")
    ax_curve.set_xlabel("GMACs per image")
    ax_curve.set_ylabel("mIoU (%)")
    ax_curve.set_title("accuracy against compute")
    ax_curve.legend(loc="lower right")
    ax_curve.grid(alpha=0.3)

    labels = [format_rho(r.rho) for r in results]
    bottom = [0.0] * len(results)
    for stage in range(3):
        share = [100 * r.stage_share[stage] for r in results]
        ax_share.bar(labels, share, bottom=bottom, color=STAGE_COLOURS[stage], label=f"stage {stage + 1}")
        bottom = [b + s for b, s in zip(bottom, share)]
    ax_share.set_xlabel("rho")
    ax_share.set_ylabel("pixels decided (%)")
    ax_share.set_title("where pixels are decided")
    ax_share.legend(loc="upper left", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reliability(before: Reliability, after: Reliability, path: str, title: str = "",
                     temperature: Optional[float] = None) -> None:
    """A reliability diagram: accuracy against confidence per bin, uncalibrated and calibrated,
    the diagonal of perfect calibration, ECEs in the legend; below, pixels per bin."""
    fig, (ax, ax_count) = plt.subplots(2, 1, figsize=(5, 5.6), sharex=True,
                                       gridspec_kw={"height_ratios": [3, 1]})
    edges = np.linspace(0, 1, before.bins + 1)
    centres, width = (edges[:-1] + edges[1:]) / 2, 1.0 / before.bins
    after_label = "calibrated" + (f" (T = {temperature:.3g})" if temperature is not None else "")
    for reliability, label, colour, shift in ((before, "uncalibrated", "#c44e52", -0.22),
                                              (after, after_label, "#4c72b0", 0.22)):
        count, confidence, accuracy = reliability.curve()
        ece = reliability.ece()
        name = f"{label}, ECE {100 * ece:.2f}%" if ece is not None else label
        ax.bar(centres + shift * width, np.nan_to_num(accuracy), width * 0.42, color=colour, label=name)
        ax_count.bar(centres + shift * width, count, width * 0.42, color=colour)
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title or "reliability")
    ax_count.set_yscale("log")
    ax_count.set_xlabel("confidence (top softmax score)")
    ax_count.set_ylabel("pixels")
    ax_count.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_pareto(points: Sequence[ThresholdPoint], front: Sequence[ThresholdPoint], chosen: ThresholdPoint,
                reference_miou: float, criterion: str, path: str, title: str = "") -> None:
    """mIoU against MACs (share of the dense run) of every explored (rho_1, rho_2), the Pareto
    front, the single-rho points (rho_1 = rho_2) for comparison, and the chosen pair."""
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ax.scatter([100 * p.macs_ratio for p in points], [100 * p.miou for p in points], s=10,
               color="#bbbbbb", label="explored (rho_1, rho_2)")
    ax.plot([100 * p.macs_ratio for p in front], [100 * p.miou for p in front], "-o", ms=3,
            color="#4c72b0", label="Pareto front")
    single = sorted((p for p in points if p.rho[0] == p.rho[1]), key=lambda p: p.rho[0])
    ax.plot([100 * p.macs_ratio for p in single], [100 * p.miou for p in single], "s", ms=4,
            color="#dd8452", label="one rho for both stages")
    ax.axhline(100 * reference_miou, ls=":", color="grey", label=f"reference {100 * reference_miou:.1f}")
    if criterion.startswith("max_drop="):
        floor = 100 * reference_miou - float(criterion.split("=")[1])
        ax.axhline(floor, ls="--", color="#c44e52", label=f"floor {floor:.1f}")
    else:
        ax.axvline(100 * float(criterion.split("=")[1]), ls="--", color="#c44e52", label="budget")
    ax.plot([100 * chosen.macs_ratio], [100 * chosen.miou], "*", ms=16, color="#c44e52",
            label=f"chosen rho {format_rho(chosen.rho)}")
    ax.set_xlabel("MACs, % of the dense run")
    ax.set_ylabel("mIoU (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title or f"thresholds: {criterion}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
