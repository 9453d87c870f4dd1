"""Stages 2-3 are checked when the model is built: what the sparse path cannot run exactly is
refused at once, in one line naming the stage, the module's path, why and where the table of
what is supported lives; from the command line, exit 2. Never after a warm-up."""
from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest
import torch
from torch import nn

from sparse_lc import LayerCascade, build_backbone
from sparse_lc.backbones import list_backbones
from sparse_lc.backbones.base import check_backbone
from sparse_lc.errors import ModelError
from sparse_lc.ops import DOCS

# A backbone of a user's, with one block of stage 2 in several broken variants (and the block
# every variant is a mistake of). Written to a file for the command-line tests.
BAD_NETS = '''
from torch import nn

import sparse_lc
from sparse_lc.backbones import CascadeBackbone
from sparse_lc.ops import DenseFeatures, run_sequential


class Good(nn.Module):
    def __init__(self, stride=1, norm=None, conv=nn.Conv2d):
        super().__init__()
        self.conv = conv(8, 8, 3, stride=stride, padding=2, dilation=2, bias=False)
        self.norm = norm or nn.BatchNorm2d(8)

    def forward(self, x):
        return x.conv(self.conv).norm(self.norm).relu().add(x)


class Pooling(Good):
    def __init__(self):
        super().__init__()
        self.pool = nn.AvgPool2d(3, stride=1, padding=1)

    def forward(self, x):
        return x.pool(self.pool)


class TorchLayer(Pooling):
    def forward(self, x):
        return self.pool(x)


class ReadsTheMap(Good):
    def forward(self, x):
        return type(x)(x.data.flip(2))


class ToDense(Good):
    def forward(self, x):
        return DenseFeatures(x.to_dense())


class StandardisedConv(nn.Conv2d):
    def forward(self, x):
        w = self.weight
        return self._conv_forward(x, (w - w.mean((1, 2, 3), keepdim=True)) / w.std(), self.bias)


VARIANTS = {
    "stride": (lambda: Good(stride=2), "backbone.layer2.conv (Conv2d)", "stride 1"),
    "pooling": (Pooling, "backbone.layer2.pool (AvgPool2d)", "x.max_pool"),
    "torch_layer": (TorchLayer, "backbone.layer2.pool (AvgPool2d)", "called on the features as on a tensor"),
    "unknown_module": (ReadsTheMap, "backbone.layer2 (ReadsTheMap)", "x.data"),
    "unknown_norm": (lambda: Good(norm=nn.Dropout()), "backbone.layer2.norm (Dropout)", "not a normalisation"),
    "instance_norm_with_running_stats": (lambda: Good(norm=nn.InstanceNorm2d(8, track_running_stats=True)),
                                         "backbone.layer2.norm (InstanceNorm2d)", "track_running_stats"),
    "conv_with_its_own_forward": (lambda: Good(conv=StandardisedConv), "backbone.layer2.conv (StandardisedConv)",
                                  "overrides nn.Conv2d's forward"),
    "to_dense": (ToDense, "backbone.layer2 (ToDense)", "x.to_dense()"),
}


class Net(CascadeBackbone):
    def __init__(self, variant="good"):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 8, stride=8)
        self.layer2 = Good() if variant == "good" else VARIANTS[variant][0]()
        self.layer3 = Good()
        self.stage_channels, self.stage_dilations = (8, 8, 8), (1, 2, 2)

    def stage_modules(self):
        return [self.stem], [self.layer2], [self.layer3]

    def stage1(self, images):
        return DenseFeatures(images).conv(self.stem).to_dense()

    def stage2(self, x):
        return self.layer2(x)

    def stage3(self, x):
        return self.layer3(x)


def register_all():
    """Each variant as bad_VARIANT (no small_args: refused when a model is built), and one with
    small_args (refused when registered)."""
    for name in VARIANTS:
        sparse_lc.register_backbone(f"bad_{name}")(lambda name=name: Net(name))
'''


@pytest.fixture(scope="module")
def bad_nets():
    module = types.ModuleType("bad_nets")
    exec(compile(BAD_NETS, "bad_nets.py", "exec"), module.__dict__)
    return module


def _refusal(build) -> str:
    with pytest.raises(ModelError) as info:
        build()
    message = str(info.value)
    assert "\n" not in message and message.endswith(f"(what stages 2-3 may hold: {DOCS})"), message
    return message


@pytest.mark.parametrize("variant", ["stride", "pooling", "torch_layer", "unknown_module", "unknown_norm",
                                     "instance_norm_with_running_stats", "conv_with_its_own_forward", "to_dense"])
def test_each_refused_module_is_named_when_the_model_is_built(bad_nets, variant):
    _, where, why = bad_nets.VARIANTS[variant]
    message = _refusal(lambda: LayerCascade(bad_nets.Net(variant), num_classes=3))
    assert message.startswith(f"stage 2: {where} cannot run on the active pixels: "), message
    assert why in message


def test_the_same_block_is_accepted(bad_nets):
    LayerCascade(bad_nets.Net(), num_classes=3)


def test_heads_channels_and_branches_taken_only_in_eval_mode_are_checked(bad_nets):
    net = bad_nets.Net()
    net.stage_channels = (8, 16, 8)  # stage 2 returns 8 channels
    assert "stage 2: backbone.stage2 cannot run" in _refusal(lambda: LayerCascade(net, num_classes=3))
    model = LayerCascade(bad_nets.Net(), num_classes=3)
    model.heads[2].conv.stride = (2, 2)
    assert _refusal(lambda: check_backbone(model.backbone, model.heads, 3)).startswith("stage 3: heads.2.conv (Conv2d)")

    class EvalOnly(nn.Module):
        def forward(self, x):
            return x if self.training else x.max_pool(2)
    net = bad_nets.Net()
    net.layer3 = EvalOnly()
    assert "stage 3: backbone.layer3 (EvalOnly)" in _refusal(lambda: LayerCascade(net, num_classes=3))
    assert net.training  # the check put the modes back


def test_registering_a_refused_backbone_with_small_args_fails_and_registers_nothing(bad_nets):
    from sparse_lc import register_backbone

    def factory(width=8):
        return bad_nets.Net("stride")
    factory.__module__ = "user_code"
    message = _refusal(lambda: register_backbone("bad_stride_small", small_args={"width": 4})(factory))
    assert message.startswith("register_backbone('bad_stride_small'), small_args {'width': 4}: stage 2: "
                              "backbone.layer2.conv (Conv2d)"), message
    assert "bad_stride_small" not in list_backbones()


@pytest.mark.parametrize("name", list_backbones())
def test_every_registered_backbone_passes_the_check(name):
    """At its default arguments, built on the meta device (no memory: the check computes nothing)."""
    with torch.device("meta"):
        backbone = build_backbone(name)
    check_backbone(backbone)


def _write_user_files(folder):
    (folder / "bad_nets.py").write_text(BAD_NETS)
    (folder / "bad_registered.py").write_text("import bad_nets\nbad_nets.register_all()\n")
    (folder / "bad_small.py").write_text(
        "import sparse_lc, bad_nets\n"
        "sparse_lc.register_backbone('bad_small', small_args={'variant': 'pooling'})(bad_nets.Net)\n")
    (folder / "cfg.yaml").write_text("custom_imports: [bad_registered]\nmodel: {backbone: bad_stride, num_classes: 3}\n"
                                     "data: {num_workers: 0, synthetic: {num_train: 4, num_val: 2, size: [32, 32]}}\n"
                                     "train: {iters: 2, warmup_iters: 1, batch_size: 2, crop_size: [32, 32]}\n"
                                     "work_dir: run\n")
    (folder / "small.yaml").write_text("custom_imports: [bad_small]\n")


def _cli(folder, *args):
    return subprocess.run([sys.executable, "-m", "sparse_lc", *args], cwd=folder, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(folder)})


@pytest.mark.slow
def test_the_command_line_refuses_before_any_work_exit_2(tmp_path):
    _write_user_files(tmp_path)
    train = _cli(tmp_path, "train", "cfg.yaml", "--no-progress")
    assert train.returncode == 2 and "Traceback" not in train.stderr
    assert train.stderr.strip().splitlines()[-1].startswith(
        "sparse-lc train: error: stage 2: backbone.layer2.conv (Conv2d) cannot run on the active pixels: a conv on "
        "an active set keeps the grid"), train.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written, no warm-up
    small = _cli(tmp_path, "list", "small.yaml")
    assert small.returncode == 2, small.stderr
    assert small.stderr.startswith("sparse-lc list: error: register_backbone('bad_small'), small_args {'variant': "
                                   "'pooling'}: stage 2: backbone.layer2.pool (AvgPool2d) cannot run"), small.stderr
    listed = _cli(tmp_path, "list", "cfg.yaml")  # registered without small_args: checked by list
    assert listed.returncode == 2, listed.stderr
    imported, refusal = listed.stderr.strip().splitlines()
    assert imported == f"sparse-lc list: custom_imports: imported bad_registered from {tmp_path / 'bad_registered.py'}"
    assert refusal.startswith("sparse-lc list: error: backbone 'bad_conv_with_its_own_forward' (default "
                              "arguments): stage 2: backbone.layer2.conv (StandardisedConv)"), listed.stderr


def test_every_variant_exits_2_from_the_command_line(tmp_path, bad_nets):
    """One process runs ``sparse-lc profile`` for each variant (in-process: sparse_lc.cli.main)."""
    _write_user_files(tmp_path)
    script = ("import sys, bad_nets\nfrom sparse_lc.cli import main\n"
              "for name in bad_nets.VARIANTS:\n"
              "    code = main(['profile', '--config', 'cfg.yaml', '--set', f'model.backbone=bad_{name}', '--size', "
              "'32', '32'])\n"
              "    print(name, code, flush=True)\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    codes = dict(line.split() for line in proc.stdout.splitlines())
    assert codes == {name: "2" for name in bad_nets.VARIANTS}, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == len(bad_nets.VARIANTS)
    for (_, where, _), line in zip(bad_nets.VARIANTS.values(), errors):
        assert line.startswith(f"sparse-lc profile: error: stage 2: {where} cannot run"), line
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
