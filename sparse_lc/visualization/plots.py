"""Plots of results: rho sweeps, reliability diagrams, the thresholds' Pareto front (PNG files)."""
from __future__ import annotations

from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..evaluation import EvalResult, Reliability, ThresholdPoint  # noqa: E402
from ..rho import format_rho, rho_pair  # noqa: E402

STAGE_COLOURS = ("#4c72b0", "#dd8452", "#c44e52")


def plot_rho_sweep(results: Sequence[EvalResult], path: str, title: str = "") -> None:
    """:func:`rho_sweep_figure`, saved as a PNG at ``path``."""
    _save(rho_sweep_figure(results, title), path)


def rho_sweep_figure(results: Sequence[EvalResult], title: str = ""):
    """Left: mIoU against GMACs per image, one point per rho, each named in a column beside the
    plot with a leader line (labels never overlap, however close the points), the dense
    model's MACs dashed. Right: the share of pixels each stage decided, per rho. The key sits
    below both, outside the data."""
    results = sorted(results, key=lambda r: rho_pair(r.rho))
    height = max(4.6, 1.8 + 0.24 * len(results))  # inches: room for a label per rho in the column
    fig, (ax_curve, ax_share) = plt.subplots(1, 2, figsize=(12, height))
    gmacs = [r.macs_cascade / 1e9 for r in results]
    miou = [100 * r.miou for r in results]
    ax_curve.plot(gmacs, miou, "o-", color="#333333")
    dense = ax_curve.axvline(results[0].macs_dense / 1e9, ls="--", color="grey", label="dense model (MACs)")
    _label_column(ax_curve, [f"rho={format_rho(r.rho)}" for r in results], gmacs, miou)
    ax_curve.set_xlabel("GMACs per image")
    ax_curve.set_ylabel("mIoU (%)")
    ax_curve.set_title("accuracy against compute")
    ax_curve.grid(alpha=0.3)

    labels = [format_rho(r.rho) for r in results]
    bottom = [0.0] * len(results)
    bars = []
    for stage in range(3):
        share = [100 * r.stage_share[stage] for r in results]
        bars.append(ax_share.bar(labels, share, bottom=bottom, color=STAGE_COLOURS[stage], label=f"stage {stage + 1}"))
        bottom = [b + s for b, s in zip(bottom, share)]
    ax_share.set_xlabel("rho")
    ax_share.set_ylabel("pixels decided (%)")
    ax_share.set_title("where pixels are decided")
    if len(results) > 10:
        ax_share.tick_params(axis="x", labelrotation=45)
    fig.legend(handles=[dense, *bars], loc="lower center", ncol=4, fontsize=9, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1))  # the key's 0.45 inch at the bottom
    fig.subplots_adjust(wspace=0.5)  # the label column between the panels
    return fig


def _label_column(ax, texts: Sequence[str], xs: Sequence[float], ys: Sequence[float]) -> None:
    """Name each point ``(xs[i], ys[i])`` of ``ax`` in a column just right of the axes, evenly
    spaced in the order of the points' heights, each joined to its point by a thin line."""
    order = sorted(range(len(texts)), key=lambda i: ys[i])
    for slot, i in enumerate(order):
        height = (slot + 0.5) / len(order)
        ax.annotate(texts[i], (xs[i], ys[i]), xytext=(1.03, height), textcoords="axes fraction", fontsize=8,
                    va="center", ha="left", annotation_clip=False,
                    arrowprops={"arrowstyle": "-", "color": "#999999", "lw": 0.6, "shrinkA": 0, "shrinkB": 3})


def plot_reliability(before: Reliability, after: Reliability, path: str, title: str = "",
                     temperature: Optional[float] = None) -> None:
    """:func:`reliability_figure`, saved as a PNG at ``path``."""
    _save(reliability_figure(before, after, title, temperature), path)


def reliability_figure(before: Reliability, after: Reliability, title: str = "", temperature: Optional[float] = None):
    """A reliability diagram: accuracy against confidence per bin, uncalibrated and calibrated,
    the diagonal of perfect calibration; below, pixels per bin; under both, the key (with the
    ECEs), off the bars."""
    fig, (ax, ax_count) = plt.subplots(2, 1, figsize=(5, 6.4), sharex=True,
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
    ax.set_title(title or "reliability")
    ax_count.set_yscale("log")
    ax_count.set_xlabel("confidence (top softmax score)")
    ax_count.set_ylabel("pixels")
    ax_count.set_xlim(0, 1)
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.8 / 6.4, 1, 1))  # the key's 0.8 inch at the bottom
    return fig


def plot_pareto(points: Sequence[ThresholdPoint], front: Sequence[ThresholdPoint], chosen: ThresholdPoint,
                reference_miou: float, criterion: str, path: str, title: str = "") -> None:
    """:func:`pareto_figure`, saved as a PNG at ``path``."""
    _save(pareto_figure(points, front, chosen, reference_miou, criterion, title), path)


def pareto_figure(points: Sequence[ThresholdPoint], front: Sequence[ThresholdPoint], chosen: ThresholdPoint,
                  reference_miou: float, criterion: str, title: str = ""):
    """mIoU against MACs (share of the dense run) of every explored (rho_1, rho_2), the Pareto
    front, the single-rho points (rho_1 = rho_2) for comparison, and the chosen pair; the key
    beside the axes, off the points."""
    fig, ax = plt.subplots(figsize=(9.5, 5))
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
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)
    ax.set_title(title or f"thresholds: {criterion}")
    fig.tight_layout()
    return fig


def _save(fig, path: str, dpi: int = 120) -> None:
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
