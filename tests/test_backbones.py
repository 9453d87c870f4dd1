"""Backbone registry and torchvision weight compatibility (no downloads: weights made here)."""
from __future__ import annotations

import json

import pytest
import torch

from sparse_lc import build_backbone, build_model, list_backbones, load_config
from sparse_lc.backbones import backbone_info, load_torchvision_resnet
from sparse_lc.checkpoint import CheckpointError
from sparse_lc.ops import DenseFeatures

from conftest import randomize_weights as randomize
from reference_resnet import reference_resnet


def _randomized_reference(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return randomize(reference_resnet(name), seed).eval()


def _stride_one_layer34(ref: torch.nn.Module) -> None:
    """Turn the reference's layer3/layer4 strides into 1, as a dilation-1 OS8 network has them."""
    for layer in (ref.layer3, ref.layer4):
        for m in layer[0].modules():
            if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2):
                m.stride = (1, 1)


def test_registry_lists_and_rejects():
    assert {"tiny", "resnet18", "resnet34", "resnet50", "inception_resnet_v2", "inception_resnet_v2_full",
            "convnext_tiny", "mobilenet_v2"} <= set(list_backbones())
    with pytest.raises(ValueError, match="resnet18"):
        build_backbone("resnet81")


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_state_dict_gives_same_features(name):
    ref = _randomized_reference(name)
    backbone = build_backbone(name, dilations=(1, 1)).eval()
    dropped = load_torchvision_resnet(backbone, ref.state_dict())
    assert dropped == ["fc.bias", "fc.weight"] or sorted(dropped) == ["fc.bias", "fc.weight"]
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        f1 = backbone.stage1(x)
        expected1 = ref.layer2(ref.layer1(ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))))
        torch.testing.assert_close(f1, expected1, atol=1e-5, rtol=1e-5)
        assert f1.shape[2:] == (8, 6)  # output stride 8
        _stride_one_layer34(ref)  # same weights, stride 1, dilation 1: stages 2 and 3 equal layer3/4
        f2 = backbone.stage2(DenseFeatures(f1)).to_dense()
        torch.testing.assert_close(f2, ref.layer3(expected1), atol=1e-4, rtol=1e-4)
        f3 = backbone.stage3(DenseFeatures(f2)).to_dense()
        torch.testing.assert_close(f3, ref.layer4(f2), atol=1e-4, rtol=1e-4)


def test_pretrained_file_in_config(tmp_path):
    ref = _randomized_reference("resnet18", seed=3)
    path = tmp_path / "resnet18.pth"
    torch.save({f"module.{k}": v for k, v in ref.state_dict().items()}, path)
    cfg = load_config(overrides=["model.backbone=resnet18", f"model.pretrained={path}"])
    model = build_model(cfg["model"])
    torch.testing.assert_close(model.backbone.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)


def test_pretrained_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.pth"
    cfg = load_config(overrides=[f"model.pretrained={missing}"])
    with pytest.raises(CheckpointError, match="nope.pth: no such checkpoint file"):
        build_model(cfg["model"])
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth: not a loadable weight file"):
        build_model(load_config(overrides=[f"model.pretrained={garbage}"])["model"])
    wrong = tmp_path / "resnet50.pth"
    torch.save(reference_resnet("resnet50").state_dict(), wrong)
    with pytest.raises(CheckpointError, match="resnet50.pth: not a matching torchvision ResNet"):
        build_model(load_config(overrides=[f"model.pretrained={wrong}"])["model"])


def test_backbone_without_pretrained_weights_says_so(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save(reference_resnet("resnet18").state_dict(), path)
    cfg = load_config(overrides=["model.backbone=tiny", f"model.pretrained={path}"])
    with pytest.raises(CheckpointError, match="weights.pth: backbone TinyOS8 takes no pretrained weights"):
        build_model(cfg["model"])


def test_pickled_code_is_refused(tmp_path):
    """weights_only=True: a file that would run code on load is rejected, not executed."""
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "hook": print}, path)
    with pytest.raises(CheckpointError, match="evil.pth"):
        build_model(load_config(overrides=[f"model.pretrained={path}"])["model"])


@pytest.mark.torchvision
@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_reference_matches_real_torchvision(name):
    """The vendored reference has torchvision's keys, shapes and forward."""
    models = pytest.importorskip("torchvision.models")
    real = getattr(models, name)(weights=None).eval()
    ref = reference_resnet(name).eval()
    assert [(k, v.shape) for k, v in ref.state_dict().items()] == \
           [(k, v.shape) for k, v in real.state_dict().items()]
    ref.load_state_dict(randomize(real, 0).state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ref(x), real(x), atol=1e-4, rtol=1e-4)


@pytest.mark.torchvision
def test_real_torchvision_weights_load():
    models = pytest.importorskip("torchvision.models")
    real = randomize(models.resnet18(weights=None), 1).eval()
    backbone = build_backbone("resnet18").eval()
    load_torchvision_resnet(backbone, real.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = real.layer2(real.layer1(real.maxpool(real.relu(real.bn1(real.conv1(x))))))
        torch.testing.assert_close(backbone.stage1(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list_backbones())
def test_stage_modules_partition_the_parameters(name):
    from conftest import make_cascade
    model = make_cascade(name, **backbone_info(name).small_args)
    owned = [id(p) for stage in (1, 2, 3) for m in model.stage_modules(stage) for p in m.parameters()]
    assert len(owned) == len(set(owned)) == len(list(model.parameters()))


# --------------------------------------------------------------------- ConvNeXt-T, MobileNetV2
# timm's networks with their ImageNet heads (checked against timm itself in
# tests/test_convnext_mobilenet_weights.py): convnext_tiny's head is a layer norm and a 768 x 1000
# classifier; mobilenetv2_100's a 1x1 conv 320 -> 1280, its batch norm and a 1280 x 1000 classifier
CONVNEXT_TINY_PARAMS, CONVNEXT_TINY_HEAD = 28_589_128, 2 * 768 + 768 * 1000 + 1000
MOBILENET_V2_PARAMS, MOBILENET_V2_HEAD = 3_504_872, 320 * 1280 + 2 * 1280 + 1280 * 1000 + 1000


@pytest.mark.parametrize("name, params, stage_channels", [
    ("convnext_tiny", CONVNEXT_TINY_PARAMS - CONVNEXT_TINY_HEAD, (192, 384, 768)),
    ("mobilenet_v2", MOBILENET_V2_PARAMS - MOBILENET_V2_HEAD, (32, 96, 320))])
def test_convnext_and_mobilenet_v2_are_the_imagenet_networks_without_their_heads(name, params, stage_channels):
    with torch.device("meta"):
        backbone = build_backbone(name)
    assert sum(p.numel() for p in backbone.parameters()) == params
    assert backbone.stage_channels == stage_channels and backbone.stage_dilations == (1, 2, 4)
    info = backbone_info(name)
    assert info.weights_layout == "torchvision" and info.pixel_mean == (123.675, 116.28, 103.53)


@pytest.mark.parametrize("name", ["convnext_tiny", "mobilenet_v2"])
def test_convnext_and_mobilenet_v2_run_at_output_stride_8_without_a_stride_in_stages_2_3(name):
    backbone = build_backbone(name, **backbone_info(name).small_args)
    with torch.no_grad():
        assert backbone.stage1(torch.randn(1, 3, 72, 40)).shape[2:] == (9, 5)
    for stage in (2, 3):
        convs = [m for part in backbone.stage_modules()[stage - 1] for m in part.modules()
                 if isinstance(m, torch.nn.Conv2d)]
        assert convs and all(c.stride == (1, 1) for c in convs)
        assert max(c.dilation[0] for c in convs) == backbone.stage_dilations[stage - 1]


def test_wrong_convnext_weights_are_one_line(tmp_path):
    from sparse_lc import build_backbone as build
    wrong = build("mobilenet_v2").state_dict()
    path = tmp_path / "mobilenet.pth"
    torch.save(wrong, path)
    cfg = load_config(overrides=["model.backbone=convnext_tiny", f"model.pretrained={path}"])
    with pytest.raises(CheckpointError, match=r"mobilenet.pth: not a matching convnext state_dict \(missing "):
        build_model(cfg["model"])


# ----------------------------------------------------------------------- Inception-ResNet-v2
TIMM_PARAMS = 55_843_464            # timm's inception_resnet_v2 (ImageNet classifier included)
TIMM_CLASSIFIER = 1536 * 1000 + 1000


def _irnv2(name: str = "inception_resnet_v2", seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return randomize(build_backbone(name, **kwargs), seed).eval()


def _timm_style_state_dict(seed: int, **kwargs):
    """A timm-layout state_dict (10 / 20 / 10 blocks and the ImageNet classifier ``classif``)."""
    full = _irnv2("inception_resnet_v2_full", seed, **kwargs).state_dict()
    full["classif.weight"] = torch.randn(1000, full["conv2d_7b.conv.weight"].shape[0])
    full["classif.bias"] = torch.zeros(1000)
    return full


def test_irnv2_parameter_counts():
    """The 10/20/10 network without its classifier has exactly timm's weights; 5/10/5 (the paper's)."""
    full = build_backbone("inception_resnet_v2_full")
    assert sum(p.numel() for p in full.parameters()) == TIMM_PARAMS - TIMM_CLASSIFIER == 54_306_464
    paper = build_backbone("inception_resnet_v2")
    assert sum(p.numel() for p in paper.parameters()) == 32_245_664
    assert paper.stage_channels == (1088, 2080, 1536) and paper.stage_dilations == (1, 2, 4)


def test_irnv2_output_stride_8():
    backbone = _irnv2(width=1 / 16)
    with torch.no_grad():
        assert backbone.stage1(torch.randn(1, 3, 512, 512)).shape[2:] == (64, 64)
        assert backbone.stage1(torch.randn(1, 3, 72, 40)).shape[2:] == (9, 5)


def test_irnv2_loads_the_first_blocks_of_a_deeper_state_dict():
    state = _timm_style_state_dict(seed=1, width=1 / 16)
    backbone = _irnv2(width=1 / 16, depths=(5, 10, 5), seed=2)
    dropped = backbone.load_pretrained({f"module.{k}": v for k, v in state.items()})
    expected = ({f"repeat.{i}." for i in range(5, 10)} | {f"repeat_1.{i}." for i in range(10, 20)}
                | {f"repeat_2.{i}." for i in range(4, 9)} | {"classif."})
    prefixes = {k[:k.index(".", k.index(".") + 1) + 1] if k.startswith("repeat") else "classif." for k in dropped}
    assert prefixes == expected
    own = backbone.state_dict()
    assert set(own) | set(dropped) == set(state)
    for key in own:  # every kept weight where timm has it: repeat_2.3 is timm's repeat_2.3, block8 is block8
        torch.testing.assert_close(own[key], state[key], atol=0, rtol=0, msg=key)


def test_irnv2_wrong_weights_are_clear_errors(tmp_path):
    """A renamed key, a file of another width, too shallow a file: one line naming file and keys."""
    state = _timm_style_state_dict(seed=3, width=1 / 16)
    renamed = dict(state)
    renamed["mixed_6a.branch9.conv.weight"] = renamed.pop("mixed_6a.branch0.conv.weight")
    shallow = {k: v for k, v in state.items() if not k.startswith("repeat_1.9.")}
    overrides = ["model.backbone=inception_resnet_v2", "model.backbone_args={width: 0.0625}"]
    for name, bad, match in [("renamed.pth", renamed, r"missing \['mixed_6a.branch0.conv.weight'\], "
                                                      r"unexpected \['mixed_6a.branch9.conv.weight'\]"),
                             ("shallow.pth", shallow, r"missing \['repeat_1.9.branch0.bn.bias'"),
                             ("resnet.pth", reference_resnet("resnet18").state_dict(), "missing")]:
        torch.save(bad, tmp_path / name)
        cfg = load_config(overrides=[*overrides, f"model.pretrained={tmp_path / name}"])
        with pytest.raises(CheckpointError, match=f"{name}: not a matching timm inception_resnet_v2 "
                                                  f"state_dict \\(.*{match}"):
            build_model(cfg["model"])
    other_width = tmp_path / "width8.pth"
    torch.save(_timm_style_state_dict(seed=3, width=1 / 8), other_width)
    cfg = load_config(overrides=[*overrides, f"model.pretrained={other_width}"])
    with pytest.raises(CheckpointError, match=r"width8.pth: .*wrong shape \['block8.branch0.bn.bias'"):
        build_model(cfg["model"])


def test_irnv2_pretrained_file_in_config(tmp_path):
    state = _timm_style_state_dict(seed=4, width=1 / 16)
    path = tmp_path / "inception_resnet_v2.pth"
    torch.save(state, path)
    cfg = load_config("configs/lc_irnv2_voc12.yaml",
                      ["model.backbone_args={width: 0.0625, depths: [5, 10, 5]}", f"model.pretrained={path}"])
    model = build_model(cfg["model"])
    torch.testing.assert_close(model.backbone.block8.conv2d.weight, state["block8.conv2d.weight"])
    assert model.num_classes == 21 and model.rho == 0.985


@pytest.mark.parametrize("aspp_rates", [None, [6, 12, 18, 24]])
def test_irnv2_heads(aspp_rates):
    model = build_model(load_config(overrides=[
        "model.backbone=inception_resnet_v2",
        f"model.backbone_args={{width: 0.0625, aspp_rates: {json.dumps(aspp_rates)}}}"
    ])["model"])
    head3 = model.heads[2]
    dilations = [m.dilation[0] for m in head3.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert dilations == (aspp_rates or [4])
    assert [h.conv.dilation[0] for h in model.heads[:2]] == [1, 2]
