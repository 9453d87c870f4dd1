"""Backbone registry and torchvision weight compatibility (no downloads: weights made here)."""
from __future__ import annotations

import pytest
import torch

from conftest import randomize
from reference_resnet import reference_resnet
from sparse_lc import build_backbone, build_model, list_backbones, load_config
from sparse_lc.backbones import load_torchvision_resnet
from sparse_lc.checkpoint import CheckpointError
from sparse_lc.ops import DenseFeatures


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
    assert {"tiny", "resnet18", "resnet34", "resnet50"} <= set(list_backbones())
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


@pytest.mark.parametrize("name", ["tiny", "resnet18"])
def test_stage_modules_partition_the_parameters(name):
    from conftest import make_cascade
    model = make_cascade(name)
    owned = [id(p) for stage in (1, 2, 3) for m in model.stage_modules(stage) for p in m.parameters()]
    assert len(owned) == len(set(owned)) == len(list(model.parameters()))
