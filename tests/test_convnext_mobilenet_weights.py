"""ConvNeXt-T and MobileNetV2: timm's and torchvision's state_dicts load and give the same features.

timm builds both networks at output stride 8 itself (``output_stride=8``): our three stages equal
its layers, stage by stage, with its weights. torchvision has no such option: stage 1 equals its
first layers as they are; stages 2 and 3 equal its later layers with their strides turned into
our dilations (the same weights). Needs timm / torchvision (test dependencies, not library ones):
``pytest -m "torchvision or timm"`` in the environment of .ci/run. Weights are random (no
download); the files are written and read as a user's would be.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sparse_lc import build_backbone, build_model, load_config
from sparse_lc.ops import DenseFeatures

from conftest import randomize_weights as randomize

X = torch.randn(2, 3, 96, 64, generator=torch.Generator().manual_seed(0))


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.shape == expected.shape, what
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, atol=1e-4 * scale, rtol=1e-4, msg=what)


def _stages(backbone, x):
    with torch.no_grad():
        f1 = backbone.stage1(x)
        f2 = backbone.stage2(DenseFeatures(f1)).to_dense()
        return f1, f2, backbone.stage3(DenseFeatures(f2)).to_dense()


def _loaded(name: str, state_dict, expected_unused):
    backbone = build_backbone(name).eval()
    unused = backbone.load_pretrained({f"module.{k}": v for k, v in state_dict.items()})
    assert sorted(unused) == sorted(expected_unused)
    return backbone


# ------------------------------------------------------------------------------------ timm
@pytest.mark.timm
@pytest.mark.parametrize("name, timm_name", [("convnext_tiny", "convnext_tiny"), ("mobilenet_v2", "mobilenetv2_100")])
def test_timm_output_stride_8_networks_are_ours(name, timm_name):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = randomize(timm.create_model(timm_name, pretrained=False, output_stride=8), 0).eval()
    head = [k for k in net.state_dict() if k.startswith(("head.", "conv_head.", "bn2.", "classifier."))]
    backbone = _loaded(name, net.state_dict(), head)
    ours = {k: v.shape for k, v in backbone.state_dict().items()}
    assert ours == {k: v.shape for k, v in net.state_dict().items() if k not in head}  # every other weight is timm's
    assert sum(p.numel() for p in backbone.parameters()) == sum(
        p.numel() for n, p in net.named_parameters() if n not in head)
    with torch.no_grad():
        if name == "convnext_tiny":
            t1 = net.stages[1](net.stages[0](net.stem(X)))
            t2 = net.stages[2](t1)
            t3 = net.stages[3](t2)
        else:
            t1 = net.blocks[:3](net.bn1(net.conv_stem(X)))
            t2 = net.blocks[3:5](t1)
            t3 = net.blocks[5:](t2)
    for k, (mine, theirs) in enumerate(zip(_stages(backbone, X), (t1, t2, t3)), 1):
        _assert_close(mine, theirs, f"stage {k}")
    assert t1.shape[2:] == (12, 8)  # output stride 8


# ----------------------------------------------------------------------------- torchvision
def _dilate(conv: nn.Conv2d, dilation: int, padding="symmetric") -> None:
    """A torchvision conv turned into ours: stride 1, ``dilation``, 'same' padding."""
    conv.stride, conv.dilation = (1, 1), (dilation, dilation)
    k = conv.kernel_size[0]
    conv.padding = "same" if padding == "same" else (dilation * (k - 1) // 2,) * 2


@pytest.mark.torchvision
def test_torchvision_convnext_tiny_loads():
    models = pytest.importorskip("torchvision.models")
    tv = randomize(models.convnext_tiny(weights=None), 0).eval()
    backbone = _loaded("convnext_tiny", tv.state_dict(), ["head.norm.weight", "head.norm.bias", "head.fc.weight",
                                                          "head.fc.bias"])
    f = tv.features
    _dilate(f[4][1], 1, "same")                      # the 2x2 downsampling convs at stride 1
    _dilate(f[6][1], 2, "same")
    for stage, dilation in ((f[5], 2), (f[7], 4)):   # the 7x7 depthwise convs of stages 2 and 3
        for block in stage:
            _dilate(block.block[0], dilation)
    with torch.no_grad():
        t1 = f[:4](X)
        t2 = f[5](f[4](t1))
        t3 = f[7](f[6](t2))
    for k, (mine, theirs) in enumerate(zip(_stages(backbone, X), (t1, t2, t3)), 1):
        _assert_close(mine, theirs, f"stage {k}")


@pytest.mark.torchvision
def test_torchvision_mobilenet_v2_loads():
    models = pytest.importorskip("torchvision.models")
    tv = randomize(models.mobilenet_v2(weights=None), 0).eval()
    head = [k for k in tv.state_dict() if k.startswith(("features.18.", "classifier."))]
    renamed = [k.replace("features.18.0.", "conv_head.").replace("features.18.1.", "bn2.").replace("classifier.1.",
                                                                                                  "classifier.")
               for k in head]
    backbone = _loaded("mobilenet_v2", tv.state_dict(), renamed)
    f = tv.features
    # torchvision's features 7-13 are stacks 3-4 (stage 2), 14-17 stacks 5-6 (stage 3); each stack's
    # first block keeps the rate before it (timm's rule)
    for index, dilation in zip(range(7, 18), (1, 2, 2, 2, 2, 2, 2, 2, 4, 4, 4)):
        _dilate(f[index].conv[1][0], dilation)
    with torch.no_grad():
        t1 = f[:7](X)
        t2 = f[7:14](t1)
        t3 = f[14:18](t2)
    for k, (mine, theirs) in enumerate(zip(_stages(backbone, X), (t1, t2, t3)), 1):
        _assert_close(mine, theirs, f"stage {k}")


@pytest.mark.torchvision
@pytest.mark.parametrize("name, config", [("convnext_tiny", "configs/lc_convnext_t_os8.yaml"),
                                          ("mobilenet_v2", "configs/lc_mobilenetv2_os8.yaml")])
def test_a_torchvision_file_in_the_shipped_config(tmp_path, name, config):
    models = pytest.importorskip("torchvision.models")
    tv = randomize(getattr(models, name)(weights=None), 3)
    path = tmp_path / "weights.pth"
    torch.save(tv.state_dict(), path)
    model = build_model(load_config(config, [f"model.pretrained={path}"])["model"])
    first = "stem.0.weight" if name == "convnext_tiny" else "conv_stem.weight"
    torch.testing.assert_close(model.backbone.state_dict()[first], tv.features[0][0].weight)


# ------------------------------------------------- their layer norms in a user's sparse stage
def _cascade_with(norm: nn.Module):
    """A cascade whose stages 2-3 apply ``norm`` (a library's layer norm over 8 channels)."""
    from sparse_lc import LayerCascade
    from sparse_lc.backbones import CascadeBackbone
    from sparse_lc.testing import randomize_weights

    class Net(CascadeBackbone):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 8, stride=8)
            self.dw = nn.Conv2d(8, 8, 7, padding=6, dilation=2, groups=8)
            self.norm = norm
            self.stage_channels, self.stage_dilations = (8, 8, 8), (1, 2, 2)

        def stage_modules(self):
            return [self.stem], [self.dw, self.norm], []

        def stage1(self, images):
            return DenseFeatures(images).conv(self.stem).to_dense()

        def stage2(self, x):
            return x.conv(self.dw).norm(self.norm).add(x)

        def stage3(self, x):
            return x.norm(self.norm)

    return randomize_weights(LayerCascade(Net(), num_classes=3, head_channels=8), 0)


@pytest.mark.torchvision
def test_torchvisions_layer_norm_2d_keeps_the_contract():
    from sparse_lc.testing import assert_sparse_matches_dense

    convnext = pytest.importorskip("torchvision.models.convnext")
    assert_sparse_matches_dense(_cascade_with(convnext.LayerNorm2d(8, eps=1e-6)), halos=(0,))


@pytest.mark.timm
@pytest.mark.parametrize("name", ["LayerNorm", "LayerNorm2d"])
def test_timms_layer_norms_keep_the_contract(name):
    from sparse_lc.testing import assert_sparse_matches_dense

    layers = pytest.importorskip("timm.layers")
    assert_sparse_matches_dense(_cascade_with(getattr(layers, name)(8)), halos=(0,))
