"""One generic registry for backbones, datasets and train modes: close matches, settings, listing."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sparse_lc import load_config
from sparse_lc.backbones import backbone_info, register_backbone
from sparse_lc.backbones.base import IMAGENET_MEAN, IMAGENET_STD
from sparse_lc.cli import main
from sparse_lc.data import DATASETS, build_dataset
from sparse_lc.errors import ConfigError, DataError, UnknownNameError
from sparse_lc.registry import Registry
from sparse_lc.training import TRAIN_MODES, build_phases


def test_registry_suggests_close_matches_and_refuses_twins():
    things = Registry("thing")
    things.register("alpha", 1, colour="red")
    things.register("beta")(2)
    assert things.names() == ["alpha", "beta"] and "alpha" in things and len(things) == 2
    assert things.get("beta") == 2 and things.info("alpha") == {"colour": "red"}
    with pytest.raises(UnknownNameError,
                       match=r"unknown thing 'alpah' \(did you mean alpha\?\); available: alpha, beta"):
        things.get("alpah")
    with pytest.raises(ValueError, match="registered twice"):
        things.register("alpha", 3)


@pytest.mark.parametrize("key, value, message", [
    ("model.backbone", "resnet81", r"model.backbone: unknown backbone 'resnet81' \(did you mean resnet18"),
    ("data.type", "vocc", r"data.type: unknown dataset 'vocc' \(did you mean voc"),
    ("train.mode", "lcc", r"train.mode: unknown train mode 'lcc' \(did you mean lc"),
])
def test_a_typo_in_a_registered_name_suggests_the_right_one(key, value, message):
    with pytest.raises((ConfigError, DataError), match=message):
        cfg = load_config(overrides=[f"{key}={value}"])
        build_dataset(cfg, train=True)
        build_phases(cfg)


def test_a_config_that_only_names_a_backbone_gets_its_normalisation():
    irnv2 = load_config(overrides=["model.backbone=inception_resnet_v2"])["model"]
    assert irnv2["pixel_mean"] == [127.5] * 3 and irnv2["pixel_std"] == [127.5] * 3
    resnet = load_config(overrides=["model.backbone=resnet50"])["model"]
    assert resnet["pixel_mean"] == list(IMAGENET_MEAN) and resnet["pixel_std"] == list(IMAGENET_STD)
    explicit = load_config(overrides=["model.backbone=inception_resnet_v2", "model.pixel_mean=[1, 2, 3]"])["model"]
    assert explicit["pixel_mean"] == [1, 2, 3] and explicit["pixel_std"] == [127.5] * 3


def test_every_backbone_registers_its_weights_settings():
    assert backbone_info("resnet18").weights_layout == "torchvision"
    assert backbone_info("resnet18").weights_file == "resnet18-f37072fd.pth"
    assert backbone_info("inception_resnet_v2").weights_layout == "timm"
    assert backbone_info("tiny").weights_layout is None
    with pytest.raises(ValueError, match="weights_layout must be one of"):
        register_backbone("odd", weights_layout="caffe")
    with pytest.raises(ValueError, match="three numbers"):
        register_backbone("odd", pixel_std=(1.0, 0.0, 1.0))


def test_list_prints_what_is_registered(capsys):
    assert main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    by_name = {b["name"]: b for b in listed["backbones"]}
    assert by_name["inception_resnet_v2_full"]["parameters"] == 54_306_464  # timm's network minus its classifier
    assert by_name["resnet18"]["stage_channels"] == [128, 256, 512]
    assert set(listed["datasets"]) == set(DATASETS.names()) and set(listed["train_modes"]) == set(TRAIN_MODES.names())
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "inception_resnet_v2_full      54.31M" in text and "lc     the paper" in text


@pytest.mark.slow
def test_doctor_checks_the_cpu():
    from sparse_lc.cli import doctor

    proc = subprocess.run([sys.executable, "-m", "sparse_lc", "doctor", "--seconds", "0.2"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for line in ("torch", doctor._spconv_distribution(), "cumm", "driver", "algorithm    spconv Native on cpu",
                 "check cpu", "speed cpu", "verdict: all checks passed"):
        assert line in out, (line, out)
    difference = float(out.split("max |logit difference| = ")[1].split(",")[0])
    assert difference < 1e-4


def test_doctor_exits_1_when_a_check_fails(monkeypatch, capsys):
    from sparse_lc.cli import doctor

    monkeypatch.setattr(doctor, "TOLERANCE", -1.0)  # no difference is small enough
    assert main(["doctor", "--seconds", "0.05"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and out.strip().splitlines()[-1].startswith("verdict: 1 check(s) FAILED: cpu: sparse")
