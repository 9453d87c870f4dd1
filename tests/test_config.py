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


# ------------------------------------------------------------- backbone_args across _base_ files
def test_backbone_args_merge_while_the_backbone_stays(tmp_path):
    (tmp_path / "base.yaml").write_text("model: {backbone: tiny, backbone_args: {widths: [8, 8, 8], "
                                        "dilations: [1, 2]}}\n")
    (tmp_path / "run.yaml").write_text("_base_: base.yaml\nmodel: {backbone_args: {depths: [1, 2, 1]}}\n")
    cfg = load_config(str(tmp_path / "run.yaml"))
    assert cfg["model"]["backbone_args"] == {"widths": [8, 8, 8], "dilations": [1, 2], "depths": [1, 2, 1]}


def test_a_file_that_names_another_backbone_starts_from_no_arguments(tmp_path):
    """The user's case: a config based on a shipped one whose tiny-backbone arguments must not
    reach the user's backbone; --set that switches the backbone behaves the same."""
    shipped = os.path.abspath(os.path.join(CONFIG_DIR, "lc_tiny.yaml"))
    (tmp_path / "mine.yaml").write_text(f"_base_: {shipped}\nmodel: {{backbone: resnet18}}\n")
    assert load_config(str(tmp_path / "mine.yaml"))["model"]["backbone_args"] == {}
    (tmp_path / "args.yaml").write_text(f"_base_: {shipped}\nmodel: {{backbone: resnet18, backbone_args: "
                                        f"{{dilations: [1, 2]}}}}\n")
    assert load_config(str(tmp_path / "args.yaml"))["model"]["backbone_args"] == {"dilations": [1, 2]}
    assert load_config(shipped, ["model.backbone=resnet18"])["model"]["backbone_args"] == {}
    cfg = load_config(shipped, ["model.backbone_args={dilations: [1, 1]}", "model.backbone=resnet18"])
    assert cfg["model"]["backbone_args"] == {"dilations": [1, 1]}  # given on the command line: kept
    (tmp_path / "two.yaml").write_text("model: {backbone: resnet18}\n")  # two bases, the later one switches
    (tmp_path / "both.yaml").write_text(f"_base_: [{shipped}, two.yaml]\n")
    assert load_config(str(tmp_path / "both.yaml"))["model"]["backbone_args"] == {}


def test_an_argument_the_backbone_does_not_take_names_it_and_its_file(tmp_path):
    (tmp_path / "base.yaml").write_text("model: {backbone: tiny, backbone_args: {width: 3}}\n")
    (tmp_path / "run.yaml").write_text("_base_: base.yaml\nmodel: {backbone_args: {depths: [1, 1, 1]}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "run.yaml"))
    assert str(info.value) == (f"{tmp_path / 'base.yaml'}: model.backbone_args: backbone 'tiny' takes no argument "
                               f"'width' (its arguments: widths, dilations, depths)")
    with pytest.raises(ConfigError, match=r"^--set model.backbone_args: backbone 'resnet18' takes no argument 'w'"):
        load_config(overrides=["model.backbone_args={w: 1}"])


@pytest.mark.slow
def test_a_base_that_switches_backbone_trains_without_any_set(tmp_path):
    """From the command line: a user's backbone (custom_imports) over a shipped config of another."""
    import subprocess
    import sys

    (tmp_path / "vgg.py").write_text(
        "import sparse_lc\nfrom sparse_lc.backbones.tiny import TinyOS8\n\n\n"
        "@sparse_lc.register_backbone('vgg_dil')\ndef vgg_dil(width=8, dilation=2):\n"
        "    return TinyOS8((width, width, width), (dilation, dilation))\n")
    shipped = os.path.abspath(os.path.join(CONFIG_DIR, "lc_synthetic_small.yaml"))
    (tmp_path / "mine.yaml").write_text(
        f"_base_: {shipped}\ncustom_imports: [vgg]\nmodel: {{backbone: vgg_dil}}\n"
        "data: {synthetic: {num_train: 4, num_val: 2, size: [32, 32]}}\n"
        "train: {iters: 2, warmup_iters: 1, batch_size: 2, crop_size: [32, 32], log_interval: 1}\n"
        "eval: {rhos: [1.0]}\nwork_dir: run\n")
    proc = subprocess.run([sys.executable, "-m", "sparse_lc", "train", "mine.yaml", "--no-progress"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "run" / "final.pth").is_file()
