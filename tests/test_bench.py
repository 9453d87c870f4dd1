"""Benchmark machinery (no timing asserts: these machines are noisy): masks, fusing, sections,
report fields, the kernels_bench suite."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from sparse_lc.analysis import bench, nested_masks
from sparse_lc.cli import main
from sparse_lc.utils import SectionTimer

from conftest import IRNV2_SMALL, make_cascade, random_images

REPO = os.path.join(os.path.dirname(__file__), "..")


@pytest.mark.parametrize("pattern", ["clustered", "scattered"])
def test_nested_masks_have_exact_shares(pattern):
    h2, h3 = nested_masks((3, 40, 50), (0.2, 0.1), pattern, seed=1)
    assert h2.flatten(1).sum(1).tolist() == [400] * 3 and h3.flatten(1).sum(1).tolist() == [200] * 3
    assert not (h3 & ~h2).any()
    with pytest.raises(ValueError, match="not increase"):
        nested_masks((1, 8, 8), (0.1, 0.2))


def test_clustered_masks_are_clustered():
    """Clustered pixels have more active 4-neighbours than scattered ones at the same share."""
    def neighbours(mask):
        m = mask.float()
        return float((m[:, 1:] * m[:, :-1]).sum() + (m[:, :, 1:] * m[:, :, :-1]).sum()) / float(m.sum())
    clustered, = nested_masks((2, 64, 64), (0.2,), "clustered")
    scattered, = nested_masks((2, 64, 64), (0.2,), "scattered")
    assert neighbours(clustered) > 2 * neighbours(scattered)


@pytest.mark.parametrize("backbone", [dict(backbone="resnet18"), dict(IRNV2_SMALL, aspp_rates=(1, 2))],
                         ids=["resnet18", "irnv2_aspp"])
def test_fused_model_keeps_both_paths_equal(backbone):
    model = make_cascade(**backbone, num_classes=7).eval()
    fused = model.fused()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    images = random_images(batch=2, height=64, width=64)
    with torch.no_grad():
        reference = model(images, rho=0.9)
        masks = reference.hard_masks
        sparse = fused(images, execution="sparse", hard_masks=masks)
        dense = fused(images, execution="dense", hard_masks=masks)
    torch.testing.assert_close(sparse.logits, dense.logits, atol=1e-4, rtol=0)
    scale = float(reference.logits.abs().max())
    assert float((sparse.logits - reference.logits).abs().max()) < 1e-5 * scale


def test_sections_cover_the_forward_pass(tiny_model):
    with torch.no_grad(), SectionTimer() as timer:
        tiny_model(random_images(), rho=0.9)
    assert set(timer.seconds) == {"stage1", "stage2", "stage3", "assembly", "spconv"}
    assert all(v >= 0 for v in timer.seconds.values())
    assert timer.seconds["spconv"] <= timer.seconds["stage2"] + timer.seconds["stage3"]  # nested in them


def test_bench_report(tiny_model):
    report = bench(tiny_model, (64, 64), hard_shares=(0.3, 0.1), warmup=0, reps=2)
    assert report.setting == "hard_share=0.3/0.1"
    assert [s.name for s in report.stages] == ["stage1", "stage2", "stage3", "assembly"]
    assert report.stages[1].active_fraction == pytest.approx(0.3, abs=0.02)
    assert report.speedup == pytest.approx(report.dense_s / report.sparse_s)
    assert report.ideal_speedup > 1 and report.stage23["mac_ratio"] > 1
    assert isinstance(report.peak_mem_dense, int) and isinstance(report.peak_mem_sparse, int)
    assert bench(tiny_model, (64, 64), rho=0.9, warmup=0, reps=1).setting == "rho=0.9"


def test_bench_cli_json(capsys):
    assert main(["bench", "--size", "32", "32", "--hard-share", "0.2", "0.1", "--reps", "1", "--warmup", "0",
                 "--json", "--set", "model.backbone=tiny"]) == 0
    data = json.loads(capsys.readouterr().out)
    expected = {"dense_s", "sparse_s", "speedup", "ideal_speedup", "stages", "peak_mem_dense", "peak_mem_sparse"}
    assert expected <= set(data)
    assert set(data["stages"][0]) == {"name", "dense_s", "sparse_s", "active_fraction"}
    assert main(["bench", "--size", "32", "32", "--sweep", "0.1", "0.4", "--reps", "1", "--warmup", "0",
                 "--set", "model.backbone=tiny"]) == 0
    out = capsys.readouterr().out
    assert "hard_share=0.1/0.05" in out and "hard_share=0.4/0.2" in out and "of the limit" in out


@pytest.mark.parametrize("config", ["lc_convnext_t_os8.yaml", "lc_mobilenetv2_os8.yaml"])
def test_the_backbone_pages_bench_configs_run(config, capsys):
    """docs/backbones.md's bench commands of ConvNeXt-T and MobileNetV2, at 64 x 64 and one pass
    (the page's 512 x 512 runs take 20-90 s here): the full-size models, their MAC ratio above 1."""
    assert main(["bench", "--config", os.path.join(REPO, "configs", config), "--hard-share", "0.2", "0.1",
                 "--threads", "1", "--size", "64", "64", "--reps", "1", "--warmup", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ideal_speedup"] > 2 and report["sparse_s"] > 0 and len(report["stages"]) >= 3


@pytest.mark.slow
def test_kernels_bench_runs_and_writes_its_files(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "kernels_bench", "--channels", "16", "--dilations", "2",
                           "--shares", "0.1", "1.0", "--reps", "1", "--warmup", "0", "--no-progress",
                           "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads((tmp_path / "layers.json").read_text())
    assert len(data["results"]) == 4 and data["machine"]["threads"] == 2
    row = data["results"][0]
    assert row["algo"] == "Native" and row["mac_ratio"] > 1
    assert (tmp_path / "layers.csv").read_text().count("\n") == 5
    assert (tmp_path / "speedup.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("warmup, reps", [(0, 1), (1, 3)])
def test_bench_image_honours_warmup_and_reps(monkeypatch, capsys, warmup, reps):
    """``--warmup`` untimed passes of the whole image, then ``--reps`` timed ones, of each kind,
    alternating; the median of the timed ones is reported."""
    import statistics

    import sparse_lc.apis

    calls = []
    real = sparse_lc.apis.segment_tiled

    def counted(model, image, **kwargs):
        calls.append((kwargs.get("execution", "sparse"), image.shape))
        return real(model, image, **kwargs)

    monkeypatch.setattr(sparse_lc.apis, "segment_tiled", counted)
    sample = os.path.join(REPO, "sparse_lc", "assets", "samples", "shapes_0.png")
    assert main(["bench", "--image", sample, "--checkpoint", os.path.join(REPO, "sparse_lc", "assets",
                 "lc_synthetic_small.pth"), "--tile", "64", "64", "--stride", "48", "48", "--warmup", str(warmup),
                 "--reps", str(reps), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert calls == [("sparse", (192, 256, 3)), ("dense", (192, 256, 3))] * (warmup + reps)  # whole image each time
    for kind in ("cascade", "dense"):
        times = report[kind]["times"]
        assert len(times) == reps and report[kind]["seconds"] == statistics.median(times)
        assert report[kind]["spread"] == max(times) - min(times) and report[kind]["tiles"] == 20
    assert (report["warmup"], report["reps"]) == (warmup, reps)
    assert report["speedup"] == report["dense"]["seconds"] / report["cascade"]["seconds"]
