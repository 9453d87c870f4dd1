"""The pictures the project writes: overlays and stage maps carry a key; in the plots no label
overlaps another, no key covers the data, and every title fits in its figure."""
from __future__ import annotations

import dataclasses
import itertools
import types

import numpy as np
import pytest
import torch
from matplotlib.text import Text

from kernels_bench.layer import LayerResult
from kernels_bench.plot import speedup_figure
from sparse_lc.data.palettes import voc_palette
from sparse_lc.evaluation import Reliability, ThresholdPoint
from sparse_lc.visualization import STAGE_COLOURS_BGR, draw_stage_map, overlay
from sparse_lc.visualization.pictures import KEY_CLASSES, _class_key
from sparse_lc.visualization.plots import pareto_figure, reliability_figure, rho_sweep_figure

NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "table")


def labelled_scene():
    """A 120x160 grey image: background on top, class 2 below, class 5 in the bottom-right corner."""
    label = np.zeros((120, 160), np.uint8)
    label[60:] = 2
    label[100:, 100:] = 5
    return np.full((120, 160, 3), 128, np.uint8), label


def changed(a: np.ndarray, b: np.ndarray):
    """Rows and columns of the pixels where two pictures differ."""
    return np.nonzero(np.any(a != b, axis=2))


def test_an_overlay_names_the_classes_it_shows_most_pixels_first():
    image, label = labelled_scene()
    palette = voc_palette(len(NAMES))
    assert [text for text, _ in _class_key(np.bincount(label.ravel(), minlength=12), NAMES, palette)] == \
        ["background", "bicycle", "bottle"]  # 9600, 8400 and 1200 pixels
    plain, keyed = overlay(image, label, palette), overlay(image, label, palette, names=NAMES)
    rows, cols = changed(plain, keyed)
    assert len(rows) and rows.max() < 60 and cols.max() < 110  # a small key in the top-left corner only
    swatch = keyed[rows.min():rows.max(), cols.min():cols.max()].reshape(-1, 3)
    assert any((swatch == palette[2][::-1]).all(1))  # bicycle's colour (BGR) is in the key


def test_a_key_of_many_classes_counts_the_rest():
    pixels = np.arange(12, 0, -1)
    entries = _class_key(pixels, NAMES, voc_palette(12))
    assert len(entries) == KEY_CLASSES + 1 and entries[-1] == ("+ 2 more", None)


def test_a_stage_map_carries_the_stage_key():
    image = np.full((120, 160, 3), 128, np.uint8)
    stages = np.ones((120, 160), np.uint8)
    picture = draw_stage_map(image, stages, (0.5, 0.3, 0.2))
    for colour in STAGE_COLOURS_BGR:  # each stage's swatch, at full strength, in the key
        assert (picture[:60, :120].reshape(-1, 3) == colour).all(1).any()


def boxes_overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def rendered(fig):
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def assert_key_covers_no_data(fig, key) -> None:
    """The key lies outside every axes, tick labels and axis labels included."""
    renderer = rendered(fig)
    box = key.get_window_extent(renderer)
    for ax in fig.axes:
        frame = ax.get_tightbbox(renderer, bbox_extra_artists=[])  # the axes, its ticks and labels: no keys, no texts
        assert not boxes_overlap(box, frame), f"the key covers {ax.get_title()!r}"


def assert_title_fits(fig, title) -> None:
    renderer = rendered(fig)
    box, figure = title.get_window_extent(renderer), fig.bbox
    assert figure.x0 <= box.x0 and box.x1 <= figure.x1 and box.y1 <= figure.y1, (box, figure)


def sweep(rhos, macs=lambda rho: 0.02 + 0.01 * rho ** 8, miou=lambda rho: 0.8 + 0.07 * rho ** 4):
    """Results of an evaluation at ``rhos``: close to each other near rho = 1, as in real sweeps."""
    return [types.SimpleNamespace(rho=rho, macs_cascade=1e9 * macs(rho), macs_dense=0.156e9, miou=miou(rho),
                                  stage_share=[1 - rho / 2, rho / 4, rho / 4]) for rho in rhos]


@pytest.mark.parametrize("rhos", [(0.0, 0.5, 0.8, 0.9, 0.95, 0.985, 0.995, 0.999, 1.0),
                                  tuple(np.linspace(0.9, 1.0, 24).round(4))])
def test_rho_sweep_labels_never_overlap_and_the_key_covers_no_point(rhos):
    fig = rho_sweep_figure(sweep(rhos), title="lc_synthetic_small.yaml")
    renderer = rendered(fig)
    curve = fig.axes[0]
    labels = [t for t in curve.texts if t.get_text().startswith("rho=")]
    assert len(labels) == len(rhos)
    boxes = [Text.get_window_extent(t, renderer) for t in labels]  # the text, without its leader line
    for (a, box_a), (b, box_b) in itertools.combinations(zip(labels, boxes), 2):
        assert not boxes_overlap(box_a, box_b), f"{a.get_text()} overlaps {b.get_text()}"
    points = curve.transData.transform(np.column_stack(curve.lines[0].get_data()))
    for box in boxes:  # no label on a point
        assert not any(box.x0 <= x <= box.x1 and box.y0 <= y <= box.y1 for x, y in points)
    assert_key_covers_no_data(fig, fig.legends[0])
    assert_title_fits(fig, fig._suptitle)


def test_a_reliability_diagrams_key_covers_no_bar():
    data = torch.zeros(15, 3, dtype=torch.float64)
    data[3:] = torch.tensor([[100.0, 100.0 * c, 100.0 * min(1.0, c + 0.3)] for c in np.linspace(0.25, 0.97, 12)])
    fig = reliability_figure(Reliability(data=data), Reliability(data=data.clone()), "stage 2 at rho 0.985", 0.93)
    assert_key_covers_no_data(fig, fig.legends[0])


def test_a_pareto_plots_key_covers_no_point():
    points = [ThresholdPoint((a, b), 0.77 + 0.1 * a * b, 1e8 * (0.1 + 0.7 * a * b ** 4), 1e9, [0.8, 0.1, 0.1])
              for a in np.linspace(0.5, 1, 8) for b in np.linspace(0.5, 1, 8) if a <= b]
    fig = pareto_figure(points, points[:5], points[3], 0.864, "max_drop=1", "lc_synthetic_small.yaml: max_drop=1")
    assert_key_covers_no_data(fig, fig.axes[0].get_legend())


@pytest.mark.parametrize("channels, dilations", [((64,), (2,)), ((64, 256, 512), (1, 2, 4))])
def test_the_kernel_benchmarks_title_fits_and_its_key_covers_no_line(channels, dilations):
    numbers = {field.name: 1.0 for field in dataclasses.fields(LayerResult)}  # whatever fields it has
    template = LayerResult(**{**numbers, "channels": 64, "dilation": 2, "share": 0.05, "pattern": "clustered",
                              "algo": "native"})
    results = [dataclasses.replace(template, channels=c, dilation=d, share=h, pattern=p, speedup=1 / h, mac_ratio=2 / h)
               for c in channels for d in dilations for h in (0.05, 0.2, 1.0) for p in ("clustered", "scattered")]
    fig = speedup_figure(results, "3x3 SubMConv2d vs dense conv, 64x64 map, 2 threads")
    assert_title_fits(fig, fig._suptitle)
    assert_key_covers_no_data(fig, fig.legends[0])
