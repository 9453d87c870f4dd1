"""The kernel benchmark's picture: time speed-up against active share, beside the MAC ratio."""
from __future__ import annotations

import math
import textwrap
from typing import List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .layer import LayerResult  # noqa: E402

PATTERN_STYLE = {"clustered": "#c44e52", "scattered": "#4c72b0"}
KEY_ENTRY = 1.5  # inches one key entry takes across
TITLE_SIZE = 11


def plot_speedups(results: List[LayerResult], path: str, title: str) -> None:
    """:func:`speedup_figure`, saved as a PNG at ``path``."""
    fig = speedup_figure(results, title)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def speedup_figure(results: List[LayerResult], title: str):
    """One panel per (channels, dilation): measured speed-up (solid), MAC ratio (dashed) per
    mask pattern, and the naive 1/h line (dotted); log-log. The title is wrapped to the
    figure's width and the key sits below the panels, so neither is cut nor covers a line."""
    channels = sorted({r.channels for r in results})
    dilations = sorted({r.dilation for r in results})
    width = max(5.0, 4 * len(dilations))
    columns = max(1, int(width // KEY_ENTRY))
    key_height = 0.25 * math.ceil(5 / columns) + 0.15  # inches: five entries in rows of `columns`
    height = 3.3 * len(channels) + key_height + 0.3
    fig, axes = plt.subplots(len(channels), len(dilations), figsize=(width, height), squeeze=False, sharex=True)
    for i, c in enumerate(channels):
        for j, d in enumerate(dilations):
            _panel(axes[i][j], [r for r in results if (r.channels, r.dilation) == (c, d)], results)
            axes[i][j].set_title(f"C={c}, dilation {d}", fontsize=10)
            if i == len(channels) - 1:
                axes[i][j].set_xlabel("active pixels h (%)")
            if j == 0:
                axes[i][j].set_ylabel("dense / sparse")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=columns, fontsize=8, frameon=False)
    characters = int(width * 72 / (0.6 * TITLE_SIZE))  # an average character is about 0.6 em wide
    fig.suptitle("\n".join(textwrap.wrap(title, characters)), fontsize=TITLE_SIZE)
    fig.tight_layout(rect=(0, key_height / height, 1, 1))
    return fig


def _panel(ax, rows: List[LayerResult], results: List[LayerResult]) -> None:
    """One (channels, dilation): speed-up and MAC ratio per pattern against h, and 1/h."""
    for pattern, colour in PATTERN_STYLE.items():
        mine = sorted((r for r in rows if r.pattern == pattern), key=lambda r: r.share)
        if not mine:
            continue
        h = [100 * r.share for r in mine]
        ax.plot(h, [r.speedup for r in mine], "o-", color=colour, label=f"time, {pattern}")
        ax.plot(h, [r.mac_ratio for r in mine], "--", color=colour, alpha=0.7, label=f"MACs, {pattern}")
    shares = np.array(sorted({100 * r.share for r in results}))
    ax.plot(shares, 100 / shares, ":", color="grey", label="1/h")
    ax.axhline(1.0, color="black", lw=0.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
