"""What only a GPU can show: the CUDA path's contract (float32 with TF32 off, float16), spconv's
fused epilogue, no host sync inside spconv's CUDA calls, CUDA graphs captured and replayed
exactly, doctor with torch's defaults, event timing. Skipped without a CUDA device; run on a
GPU machine with ``python -m pytest -q tests/test_cuda.py`` (docs/testing.md)."""
from __future__ import annotations

import pytest
import torch

from sparse_lc import LayerCascade, build_backbone, list_backbones
from sparse_lc.analysis import bench, count_macs, nested_masks
from sparse_lc.analysis.dispatch import count_host_syncs
from sparse_lc.backbones import backbone_info
from sparse_lc.cli import main
from sparse_lc.cuda_graphs import graph_report, runner_for
from sparse_lc.ops import SparseFeatures
from sparse_lc.testing import assert_sparse_matches_dense, randomize_weights

from conftest import IRNV2_SMALL, make_cascade, random_images

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

WELL_CONDITIONED = ("tiny", "resnet18", "inception_resnet_v2")  # float32 gradients (see test_equivalence)


def small_model(name: str) -> LayerCascade:
    model = LayerCascade(build_backbone(name, **backbone_info(name).small_args), num_classes=5, head_channels=16)
    return randomize_weights(model, 0)


@pytest.mark.parametrize("name", list_backbones())
def test_contract_in_float32_with_tf32_off(name):
    assert_sparse_matches_dense(small_model(name), device="cuda", dtype=torch.float32,
                                gradients=name in WELL_CONDITIONED)


@pytest.mark.parametrize("name", WELL_CONDITIONED)
def test_contract_in_half_precision(name):
    for model in (small_model(name), small_model(name).fused()):
        checks = assert_sparse_matches_dense(model, device="cuda", dtype=torch.float16)
        assert checks and max(c.max_difference for c in checks) < 2e-2


def test_fused_epilogue_equals_the_separate_ops():
    """Inference: bias and ReLU inside spconv's kernel = the kernel, then bias, then ReLU."""
    gen = torch.Generator().manual_seed(0)
    mask = (torch.rand(2, 32, 40, generator=gen) < 0.3).cuda()
    x = SparseFeatures.from_dense(torch.randn(2, 16, 32, 40, generator=gen).cuda(), mask, "s")
    conv = torch.nn.Conv2d(16, 24, 3, padding=2, dilation=2).cuda()
    with torch.no_grad():
        fused = x.conv_norm_relu(conv, torch.nn.Identity()).rows
        separate = x.conv(conv).relu().rows
    torch.testing.assert_close(fused, separate, atol=1e-4, rtol=1e-4)
    assert bool((fused >= 0).all())


def test_spconv_adds_no_host_sync_on_cuda():
    model = make_cascade(backbone="resnet18").fused().cuda()
    images = random_images(batch=2, height=128, width=128).cuda()
    with torch.no_grad():
        model(images, rho=0.9)
        syncs = count_host_syncs(lambda: model(images, rho=0.9, labels=False))
    assert sorted(site.rsplit(": ", 1)[-1] for site in syncs.sites) == ["from_mask", "subset"], syncs.describe()


@pytest.mark.parametrize("backbone", [dict(backbone="resnet18"), IRNV2_SMALL], ids=["resnet18", "irnv2-small"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_graphs_replay_the_eager_pass(backbone, dtype):
    model = make_cascade(**backbone).fused().cuda().to(dtype)
    with torch.no_grad():
        for seed, rho in ((0, 0.5), (1, 0.9), (2, 0.97), (3, 1.0)):
            images = random_images(batch=2, height=128, width=192, seed=seed).cuda().to(dtype)
            model.cuda_graphs = False
            eager, eager_macs = count_macs(model, images, rho=rho)
            model.cuda_graphs = True
            for _ in range(2):  # the capture, then a replay
                graphed, graphed_macs = count_macs(model, images, rho=rho)
                tolerance = 1e-3 if dtype == torch.float32 else 3e-2
                torch.testing.assert_close(graphed.logits, eager.logits, atol=tolerance, rtol=tolerance)
                assert graphed_macs.total() == eager_macs.total()
    assert not runner_for(model).refused, runner_for(model).refused
    assert graph_report(model)


def test_doctor_passes_with_torch_defaults(capsys):
    assert main(["doctor", "--seconds", "0.2"]) == 0
    assert "check cuda" in capsys.readouterr().out


def test_event_timed_sections_add_up():
    model = make_cascade(backbone="resnet18").fused().cuda()
    report = bench(model, (256, 256), hard_shares=(0.2, 0.1), warmup=2, reps=5)
    for total, parts in ((report.sparse_s, sum(s.sparse_s for s in report.stages)),
                         (report.dense_s, sum(s.dense_s for s in report.stages))):
        assert abs(parts - total) < 0.05 * total, (parts, total)


def test_forced_masks_time_the_same_work_on_cuda():
    """bench's forced masks move to the device once and are checked once (no sync per pass)."""
    model = make_cascade(backbone="resnet18").fused().cuda()
    images = random_images(batch=1, height=128, width=128).cuda()
    masks = tuple(m.cuda() for m in nested_masks((1, 16, 16), (0.3, 0.1), "clustered", 0))
    with torch.no_grad():
        model(images, hard_masks=masks)
        syncs = count_host_syncs(lambda: model(images, hard_masks=masks, labels=False))
    assert syncs.total == 2, syncs.describe()
