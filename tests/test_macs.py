"""MAC counting agrees with torch.utils.flop_counter on dense and sparse runs."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from sparse_lc.ops import MacCounter

from conftest import CONVNEXT_SMALL, IRNV2_SMALL, MOBILENETV2_SMALL, make_cascade, random_images

BACKBONES = {"tiny": dict(backbone="tiny"), "resnet18": dict(backbone="resnet18"), "irnv2": IRNV2_SMALL,
             "convnext": CONVNEXT_SMALL, "mobilenetv2": MOBILENETV2_SMALL}


def count(model, images, **kwargs):
    with torch.no_grad(), MacCounter(model) as macs, FlopCounterMode(display=False) as flops:
        result = model(images, **kwargs)
    return macs, flops.get_total_flops() // 2, result


@pytest.mark.parametrize("backbone", ["tiny", "resnet18", "irnv2", "convnext", "mobilenetv2"])
def test_dense_run_macs_equal_flop_counter(backbone):
    """Depthwise and grouped convs (C_in / groups per output), linears, 2x2 convs included."""
    model = make_cascade(**BACKBONES[backbone], num_classes=7).eval()
    macs, flop_macs, _ = count(model, random_images(batch=2, height=48, width=64), rho=1.0, execution="dense")
    assert macs.total("conv") == flop_macs


@pytest.mark.parametrize("backbone, rho", [("resnet18", 0.9), ("resnet18", 0.99), ("irnv2", 0.99)])
def test_sparse_run_macs_equal_flop_counter(backbone, rho):
    """spconv's CPU path does its GEMMs with torch.mm, which the flop counter sees (1x7 and 7x1
    rulebooks included; pools do no MACs and are counted by neither)."""
    model = make_cascade(**BACKBONES[backbone], num_classes=7).eval()
    macs, flop_macs, result = count(model, random_images(batch=2, height=64, width=64), rho=rho)
    assert 0 < result.stage_shares[0] < 1
    assert macs.total("conv") == flop_macs
    dense, _, _ = count(model, random_images(batch=2, height=64, width=64), rho=1.0, execution="dense")
    assert macs.total("conv") < dense.total("conv")


def test_layer_records_name_the_modules():
    model = make_cascade().eval()
    macs, _, _ = count(model, random_images(batch=1), rho=1.0)
    layers = macs.by_layer()
    assert "backbone.layer2.0.conv1" in layers and "heads.2.classifier" in layers
    record = layers["backbone.layer2.0.conv1"]
    assert record.kind == "conv" and record.active == record.positions  # rho = 1: every pixel
