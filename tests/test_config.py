"""Configs: inheritance, overrides, and errors that name the key or file."""
from __future__ import annotations

import glob
import os

import pytest

from sparse_lc import ConfigError, build_model, load_config

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs")


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(CONFIG_DIR, "*.yaml"))))
def test_shipped_configs_build(path):
    cfg = load_config(path, ["model.pretrained=null"])  # pretrained files are the user's, not in the repo
    model = build_model(cfg["model"])
    assert model.num_classes == cfg["model"]["num_classes"]


def test_base_inheritance_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text("model:\n  backbone: tiny\n  rho: 0.5\n")
    (tmp_path / "run.yaml").write_text("_base_: base.yaml\nmodel:\n  rho: 0.7\n")
    cfg = load_config(str(tmp_path / "run.yaml"), ["model.halo=2", "model.backbone_args={dilations: [1, 2]}"])
    assert cfg["model"]["backbone"] == "tiny" and cfg["model"]["rho"] == 0.7
    assert cfg["model"]["halo"] == 2 and cfg["model"]["backbone_args"] == {"dilations": [1, 2]}
    assert cfg["model"]["num_classes"] == 21  # untouched default


def test_unknown_keys_are_errors_with_suggestions(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'model.rhoo' \(did you mean model.rho\?\)"):
        load_config(overrides=["model.rhoo=0.5"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("modle:\n  rho: 0.5\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key 'modle' \(did you mean model\?\)"):
        load_config(str(bad))


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: cannot read config"):
        load_config(str(tmp_path / "missing.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(str(broken))
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: a.yaml\n")
    with pytest.raises(ConfigError, match="loop"):
        load_config(str(tmp_path / "a.yaml"))
    with pytest.raises(ConfigError, match="key=value"):
        load_config(overrides=["model.rho"])


def test_the_config_reference_page_is_current():
    """docs/configs.md is generated from the described keys (python tools/make_config_docs.py)."""
    from sparse_lc.config_keys import KEYS, reference_markdown

    page = open(os.path.join(os.path.dirname(__file__), "..", "docs", "configs.md"), encoding="utf-8").read()
    assert page == reference_markdown(), "run: python tools/make_config_docs.py"
    assert all(f"`{key.name}`" in page and key.help for key in KEYS)


def test_training_combinations(tmp_path):
    from sparse_lc.config import check_training
    from sparse_lc.errors import ConfigWarning

    with pytest.raises(ConfigError, match=r"train.warmup_iters \(30\) exceeds train.iters \(20\): mode lc would never"):
        check_training(load_config(overrides=["train.iters=20", "train.warmup_iters=30"]))
    check_training(load_config(overrides=["train.iters=20", "train.warmup_iters=30", "train.mode=dense",
                                          "train.crop_size=[64,64]"]))
    with pytest.raises(ConfigError, match="train.stage_loss_weights: all zero"):
        check_training(load_config(overrides=["train.stage_loss_weights=[0, 0, 0]"]))
    with pytest.warns(ConfigWarning, match=r"train.eval_interval \(50\) exceeds train.iters \(20\)"):
        check_training(load_config(overrides=["train.iters=20", "train.warmup_iters=5", "train.eval_interval=50",
                                              "train.crop_size=[64,64]"]))
    with pytest.warns(ConfigWarning, match=r"train.crop_size \[512, 512\] is larger than the largest rescaled"):
        check_training(load_config(overrides=["data.synthetic.size=[64,64]"]))
    # an old checkpoint's config that training would now refuse still loads (for eval, segment)
    assert load_config(overrides=["train.iters=20", "train.warmup_iters=30"])["train"]["iters"] == 20


def test_a_value_from_a_file_names_the_file(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  iters: lots\n")
    (tmp_path / "run.yaml").write_text("_base_: base.yaml\nmodel:\n  rho: 0.9\n")
    with pytest.raises(ConfigError, match=r"base.yaml: train.iters: expected a whole number >= 1, got 'lots'"):
        load_config(str(tmp_path / "run.yaml"))
    (tmp_path / "sci.yaml").write_text("train:\n  lr: 5e-4\n  iters: 2e4\n")
    cfg = load_config(str(tmp_path / "sci.yaml"))
    assert cfg["train"]["lr"] == 5e-4 and cfg["train"]["iters"] == 20000 and isinstance(cfg["train"]["iters"], int)


def test_a_dataset_with_fixed_classes_refuses_fewer(tmp_path):
    from sparse_lc.data import DataError, build_dataset

    with pytest.raises(DataError, match=r"model.num_classes \(3\) is below the 6 classes of the synthetic dataset"):
        build_dataset(load_config(overrides=["model.num_classes=3"]), train=True)
