"""Pictures and files of results: the accuracy-compute trade-off of a rho sweep."""
from __future__ import annotations

import json
import os
from typing import List, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402

from .evaluation import EvalResult  # noqa: E402

STAGE_COLOURS = ("#4c72b0", "#dd8452", "#c44e52")


def plot_rho_sweep(results: Sequence[EvalResult], path: str, title: str = "") -> None:
    """Left: mIoU against GMACs per image, one point per rho, the dense model's MACs dashed.
    Right: the share of pixels each stage decided, per rho. Saved as a PNG at ``path``."""
    results = sorted(results, key=lambda r: r.rho)
    fig, (ax_curve, ax_share) = plt.subplots(1, 2, figsize=(11, 4.2))
    gmacs = [r.macs_cascade / 1e9 for r in results]
    miou = [100 * r.miou for r in results]
    ax_curve.plot(gmacs, miou, "o-", color="#333333")
    for i, (r, x, y) in enumerate(zip(results, gmacs, miou)):  # alternate sides: close points stay legible
        ax_curve.annotate(f"rho={r.rho:g}", (x, y), textcoords="offset points", fontsize=8,
                          xytext=(6, -12 + 14 * (i % 2)), ha="left")
    ax_curve.axvline(results[0].macs_dense / 1e9, ls="--", color="grey", label="dense model")
    ax_curve.set_xlabel("GMACs per image")
    ax_curve.set_ylabel("mIoU (%)")
    ax_curve.set_title("accuracy against compute")
    ax_curve.legend(loc="lower right")
    ax_curve.grid(alpha=0.3)

    labels = [f"{r.rho:g}" for r in results]
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


def save_eval_report(results: Sequence[EvalResult], folder: str, title: str = "") -> List[str]:
    """Write ``eval.json`` (one object per rho) and, for several rho, ``rho_sweep.png`` into
    ``folder``; returns the paths written."""
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, "eval.json")]
    with open(paths[0], "w", encoding="utf-8") as f:
        json.dump([r.to_json() for r in results], f, indent=1)
    if len(results) > 1:
        paths.append(os.path.join(folder, "rho_sweep.png"))
        plot_rho_sweep(results, paths[1], title)
    return paths
