"""Profiling: per-layer and per-stage MACs, checked against torch.utils.flop_counter."""
from __future__ import annotations

import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sparse_lc.analysis import layer_stages, profile_macs
from sparse_lc.cli import main

from conftest import assert_columns_align, make_cascade, random_images


def flop_counter_macs(model, image, **kwargs) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(image, **kwargs)
    return counter.get_total_flops() // 2


def conv_macs(report, which: str) -> float:
    return sum(getattr(layer, which) for layer in report.layers if layer.kind == "conv")


@pytest.mark.parametrize("backbone", ["tiny", "resnet18"])
def test_profile_matches_the_flop_counter(backbone):
    model = make_cascade(backbone, num_classes=7).eval()
    image = random_images(batch=1, height=64, width=80, seed=3)
    report = profile_macs(model, [image], rho=0.9)
    assert 0 < report.stages[1].active_fraction < 1
    assert conv_macs(report, "dense_macs") == flop_counter_macs(model, image, rho=1.0, execution="dense")
    sparse = flop_counter_macs(model, image, rho=0.9, execution="sparse")
    assert abs(conv_macs(report, "sparse_macs") - sparse) <= 0.01 * sparse
    assert report.ratio == pytest.approx(report.dense_macs / report.sparse_macs)
    assert report.sparse_macs < report.dense_macs


def test_stages_sum_the_layers_and_stage_one_is_dense():
    model = make_cascade(num_classes=5).eval()
    report = profile_macs(model, [random_images(1, 48, 48, seed=s) for s in range(3)], rho=0.9)
    assert report.num_images == 3
    for stage in report.stages:
        assert stage.dense_macs == pytest.approx(sum(x.dense_macs for x in report.layers if x.stage == stage.name))
    s1 = report.stages[0]
    assert s1.active_fraction == 1.0 and s1.sparse_macs == s1.dense_macs
    assert report.stages[2].active_fraction <= report.stages[1].active_fraction
    owner = layer_stages(model)
    assert owner["backbone.layer3.0.conv1"] == "stage3" and owner["heads.1.classifier"] == "stage2"


def test_profile_averages_over_images():
    model = make_cascade(num_classes=5).eval()
    images = [random_images(1, 48, 48, seed=s) for s in range(2)]
    each = [profile_macs(model, [im], rho=0.9).sparse_macs for im in images]
    assert profile_macs(model, images, rho=0.9).sparse_macs == pytest.approx(sum(each) / 2)


def test_profile_cli_json(capsys):
    assert main(["profile", "--size", "64", "96", "--rho", "0.9", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"dense_macs", "sparse_macs", "ratio", "stages", "layers"} <= set(data)
    assert [s["name"] for s in data["stages"]] == ["stage1", "stage2", "stage3"]
    assert set(data["stages"][0]) >= {"name", "dense_macs", "sparse_macs", "active_fraction"}
    assert main(["profile", "--size", "64", "96", "--rho", "0.5", "1.0", "--json"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert [r["rho"] for r in both] == [0.5, 1.0]
    assert main(["profile", "--size", "64", "96", "--layers"]) == 0
    table = capsys.readouterr().out
    assert "backbone.layer3.0.conv1" in table and "total" in table


def test_profile_counts_images_in_batches_and_keeps_the_mode():
    model = make_cascade(num_classes=5).train()
    batch = random_images(batch=2, height=48, width=48)
    report = profile_macs(model, [batch], rho=0.9)
    assert report.num_images == 2 and model.training
    single = profile_macs(model, [batch[:1], batch[1:]], rho=0.9)
    assert report.dense_macs == pytest.approx(single.dense_macs)
    for a, b in zip(report.stages, single.stages):
        assert a.active_fraction == pytest.approx(b.active_fraction)


@pytest.mark.parametrize("layers", [False, True])
def test_the_table_numbers_sit_under_their_headers(layers):
    from sparse_lc.visualization import profile_table

    report = profile_macs(make_cascade().eval(), [random_images(batch=1, height=32, width=32)], rho=0.9)
    table = profile_table(report, layers)
    assert_columns_align(table, ["dense MMACs", "cascade MMACs", "active", "ratio"])
    assert table.splitlines()[2].startswith("stage1" if not layers else report.layers[0].name)
