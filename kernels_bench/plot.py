"""The kernel benchmark's picture: time speed-up against active share, beside the MAC ratio."""
from __future__ import annotations

from typing import List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .layer import LayerResult  # noqa: E402

PATTERN_STYLE = {"clustered": "#c44e52", "scattered": "#4c72b0"}


def plot_speedups(results: List[LayerResult], path: str, title: str) -> None:
    """One panel per (channels, dilation): measured speed-up (solid), MAC ratio (dashed) per
    mask pattern, and the naive 1/h line (dotted); log-log."""
    channels = sorted({r.channels for r in results})
    dilations = sorted({r.dilation for r in results})
    fig, axes = plt.subplots(len(channels), len(dilations), figsize=(4 * len(dilations), 3.3 * len(channels)),
                             squeeze=False, sharex=True)
    for i, c in enumerate(channels):
        for j, d in enumerate(dilations):
            ax = axes[i][j]
            for pattern, colour in PATTERN_STYLE.items():
                rows = sorted((r for r in results if (r.channels, r.dilation, r.pattern) == (c, d, pattern)),
                              key=lambda r: r.share)
                if not rows:
                    continue
                h = [100 * r.share for r in rows]
                ax.plot(h, [r.speedup for r in rows], "o-", color=colour, label=f"time, {pattern}")
                ax.plot(h, [r.mac_ratio for r in rows], "--", color=colour, alpha=0.7, label=f"MACs, {pattern}")
            shares = np.array(sorted({100 * r.share for r in results}))
            ax.plot(shares, 100 / shares, ":", color="grey", label="1/h")
            ax.axhline(1.0, color="black", lw=0.5)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"C={c}, dilation {d}", fontsize=10)
            ax.grid(alpha=0.3, which="both")
            if i == len(channels) - 1:
                ax.set_xlabel("active pixels h (%)")
            if j == 0:
                ax.set_ylabel("dense / sparse")
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
