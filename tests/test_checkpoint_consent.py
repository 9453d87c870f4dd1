"""No code from a checkpoint without consent: a checkpoint whose stored config names
``custom_imports`` never makes sparse_lc import them. The user allows code by naming it: in a
config file of theirs, or with ``--set custom_imports=[...]``; what a run imported is printed and
recorded in its outputs. The module of these tests writes a marker file when it runs."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from sparse_lc import build_model, load_config, load_model
from sparse_lc.checkpoint import CheckpointError, save_checkpoint

PLUGIN = "lc_plugin_marker"  # a name no other test imports
PLUGIN_CODE = f'''
import pathlib

import sparse_lc
from sparse_lc.backbones.tiny import TinyOS8

pathlib.Path("{PLUGIN}.ran").write_text("the plugin ran")


@sparse_lc.register_backbone("plugin_net")
def plugin_net(widths=(8, 8, 8)):
    return TinyOS8(tuple(widths))
'''


@pytest.fixture
def folder(tmp_path):
    """A folder that holds the plugin, a checkpoint whose config names it, an image and a
    dataset config of the user's; the plugin's network is tiny's, so its weights are made here
    without running the plugin."""
    (tmp_path / f"{PLUGIN}.py").write_text(PLUGIN_CODE)
    cfg = load_config(overrides=["model.backbone=tiny", "model.backbone_args={widths: [8, 8, 8]}",
                                 "model.num_classes=6", "model.head_channels=8"])
    model = build_model(cfg["model"])
    cfg["custom_imports"] = [PLUGIN]
    cfg["model"]["backbone"] = "plugin_net"
    save_checkpoint(str(tmp_path / "model.pth"), {"model": model.state_dict(), "config": cfg})
    cv2.imwrite(str(tmp_path / "photo.png"), np.full((32, 32, 3), 90, np.uint8))
    data = "data: {num_workers: 0, synthetic: {num_train: 2, num_val: 2, size: [32, 32]}}\n"
    (tmp_path / "mine.yaml").write_text("model: {backbone: plugin_net, backbone_args: {widths: [8, 8, 8]}, "
                                        "num_classes: 6, head_channels: 8}\n" + data)
    (tmp_path / "allowed.yaml").write_text(f"custom_imports: [{PLUGIN}]\n" + (tmp_path / "mine.yaml").read_text())
    return tmp_path


def _cli(folder, *args):
    env = {**os.environ}
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, "-m", "sparse_lc", *args, "--no-progress"], cwd=folder,
                          capture_output=True, text=True, env=env)


def _ran(folder) -> bool:
    return (folder / f"{PLUGIN}.ran").exists()


REFUSAL = (f"model.pth: its config names custom_imports [{PLUGIN}], code that sparse_lc does not import because a "
           f"checkpoint says so (a file of that name could run anything): to allow it, pass --config with your own "
           f"config that lists it, or --set custom_imports=[{PLUGIN}]")


def test_load_model_from_a_checkpoint_does_not_run_its_code(folder, monkeypatch):
    monkeypatch.chdir(folder)  # the current folder is searched for custom_imports
    with pytest.raises(CheckpointError) as info:
        load_model(checkpoint="model.pth")
    assert str(info.value).startswith(REFUSAL) and f"overrides=['custom_imports=[{PLUGIN}]']" in str(info.value)
    assert not _ran(folder) and PLUGIN not in sys.modules


@pytest.mark.slow
def test_segment_refuses_then_runs_what_the_user_allows(folder):
    refused = _cli(folder, "segment", "photo.png", "--checkpoint", "model.pth")
    assert refused.returncode == 2 and not _ran(folder)
    assert refused.stderr.strip().startswith(f"sparse-lc segment: error: {REFUSAL}"), refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    allowed = _cli(folder, "segment", "photo.png", "--checkpoint", "model.pth", "--set",
                   f"custom_imports=[{PLUGIN}]")
    assert allowed.returncode == 0, allowed.stderr
    assert _ran(folder)
    assert f"sparse-lc segment: custom_imports: imported {PLUGIN} from {folder / PLUGIN}.py" in allowed.stderr


@pytest.mark.slow
def test_eval_runs_only_the_code_of_the_users_config(folder):
    refused = _cli(folder, "eval", "mine.yaml", "model.pth")  # the user's config does not name the plugin
    assert refused.returncode == 2 and not _ran(folder)
    assert "model.backbone: unknown backbone 'plugin_net'" in refused.stderr, refused.stderr
    allowed = _cli(folder, "eval", "allowed.yaml", "model.pth", "--rho", "1.0")
    assert allowed.returncode == 0, allowed.stderr
    assert _ran(folder) and f"custom_imports: imported {PLUGIN} from" in allowed.stderr
    [record] = json.loads((folder / "model_eval" / "eval.json").read_text())  # eval writes to CKPT_STEM_eval
    assert record["custom_imports"] == {PLUGIN: str(folder / f"{PLUGIN}.py")}
