"""timm's ``inception_resnet_v2`` state_dict loads into our backbone and gives the same features.

Needs timm (a test dependency, not a library one): ``pytest -m timm`` in an environment with it
(see .ci/run). Weights are random (no download); the file is written and read as a user's would be.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sparse_lc import build_model, load_config
from sparse_lc.ops import DenseFeatures

from conftest import randomize_weights as randomize

pytestmark = pytest.mark.timm


@pytest.fixture(scope="module")
def timm_net() -> nn.Module:
    """timm's network with random weights and BN statistics (eval mode)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    return randomize(timm.create_model("inception_resnet_v2", pretrained=False), 0).eval()


@pytest.fixture(scope="module")
def timm_file(timm_net, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("weights") / "inception_resnet_v2.pth"
    torch.save(timm_net.state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def aligned_net(timm_net) -> nn.Module:
    """A copy of timm's network with our geometry and the same weights: 'same' padding
    everywhere, Reduction-A and -B at stride 1 (so it is our network at dilation 1)."""
    import copy
    net = copy.deepcopy(timm_net)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            m.padding = tuple((k - 1) // 2 for k in m.kernel_size)
        elif isinstance(m, nn.MaxPool2d):
            m.padding = 1
    for reduction in (net.mixed_6a, net.mixed_7a):
        for m in reduction.modules():
            if isinstance(m, nn.Conv2d):
                m.stride = (1, 1)
            elif isinstance(m, nn.MaxPool2d):
                m.stride = 1
    return net


def _timm_stage1(net: nn.Module, x: torch.Tensor, blocks_a: int) -> torch.Tensor:
    """timm's layers up to Reduction-A, with the first ``blocks_a`` Inception-ResNet-A blocks."""
    for name in ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "maxpool_5a",
                 "mixed_5b"):
        x = getattr(net, name)(x)
    return net.mixed_6a(net.repeat[:blocks_a](x))


def _build(backbone: str, path: str, **backbone_args):
    cfg = load_config(overrides=[f"model.backbone={backbone}", f"model.pretrained={path}"])
    cfg["model"]["backbone_args"] = backbone_args
    return build_model(cfg["model"]).eval()


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, atol=1e-4 * scale, rtol=1e-4, msg=name)


def test_keys_and_shapes_are_timms(timm_net):
    from sparse_lc import build_backbone
    own = build_backbone("inception_resnet_v2_full").state_dict()
    theirs = {k: v.shape for k, v in timm_net.state_dict().items() if not k.startswith("classif.")}
    assert {k: v.shape for k, v in own.items()} == theirs


def test_full_depth_equals_timm_stage_by_stage(timm_file, aligned_net):
    """10 / 20 / 10 blocks at dilation 1: every stage equals the corresponding timm layers."""
    model = _build("inception_resnet_v2_full", timm_file, dilations=[1, 1])
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        f1 = model.backbone.stage1(x)
        expected1 = _timm_stage1(aligned_net, x, 10)
        assert f1.shape == expected1.shape == (2, 1088, 8, 6)
        _assert_close(f1, expected1, "stage 1")
        f2 = model.backbone.stage2(DenseFeatures(f1)).to_dense()
        expected2 = aligned_net.mixed_7a(aligned_net.repeat_1(expected1))
        _assert_close(f2, expected2, "stage 2")
        f3 = model.backbone.stage3(DenseFeatures(f2)).to_dense()
        _assert_close(f3, aligned_net.forward_features(x), "stage 3")


def test_paper_depth_stage1_equals_timm_layers(timm_file, aligned_net):
    """5 / 10 / 5 blocks, the paper's dilations: stage 1 is timm's stem, its first five
    Inception-ResNet-A blocks and Reduction-A (at stride 1, 'same' padding)."""
    model = _build("inception_resnet_v2", timm_file)
    x = torch.randn(1, 3, 96, 80)
    with torch.no_grad():
        expected = _timm_stage1(aligned_net, x, 5)
        _assert_close(model.backbone.stage1(x), expected, "stage 1")
        # the comparison has teeth: a wrong mapping (blocks 0 and 1 swapped) is detected
        model.backbone.repeat[0], model.backbone.repeat[1] = model.backbone.repeat[1], model.backbone.repeat[0]
        swapped = model.backbone.stage1(x)
    error = float((swapped - expected).abs().max())
    assert error > 1e-2 * float(expected.abs().max()), error
