"""Precision: --precision on segment, bench, eval and profile; half-precision scores and labels
computed in float32; bf16 refused where spconv cannot run it; train.amp; TF32 scopes."""
from __future__ import annotations

import json
import os

import pytest
import torch
from test_train import small_cfg

from sparse_lc.apis import BUNDLED_CHECKPOINT, SAMPLES_DIR
from sparse_lc.assembly import assemble_labels, upsample_logits
from sparse_lc.cli import main
from sparse_lc.data import read_label
from sparse_lc.rho import top_confidence
from sparse_lc.utils.precision import precision_dtype, tf32_disabled, tf32_enabled

from conftest import make_cascade, random_images

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "configs")


def test_precision_names_and_refusals():
    assert precision_dtype("fp16") == torch.float16 and precision_dtype("bf16", "dense") == torch.bfloat16
    with pytest.raises(ValueError, match="no bfloat16 kernels"):
        precision_dtype("bf16", "sparse")
    with pytest.raises(ValueError, match="one of fp32, fp16, bf16"):
        precision_dtype("fp8")


def test_segment_in_fp16_labels_as_fp32(tmp_path, capsys):
    """The bundled model in float16 (on the CPU: slower, but the same code): labels of the
    bundled samples as in float32 but for a few pixels near class boundaries."""
    for precision in ("fp32", "fp16"):
        assert main(["segment", SAMPLES_DIR, "--out", str(tmp_path / precision), "--precision", precision,
                     "--no-progress", "--json"]) == 0
    assert "runs slower than fp32" in capsys.readouterr().err
    for path in sorted((tmp_path / "fp32").glob("*_label.png")):
        full, half = read_label(str(path)), read_label(str(tmp_path / "fp16" / path.name))
        assert (full == half).mean() > 0.99, path.name


def test_bf16_runs_dense_only(tmp_path, capsys):
    sample = f"{SAMPLES_DIR}/shapes_0.png"
    assert main(["segment", sample, "--out", str(tmp_path), "--precision", "bf16", "--no-progress"]) == 2
    assert "--precision bf16: spconv has no bfloat16 kernels" in capsys.readouterr().err
    assert main(["segment", sample, "--out", str(tmp_path), "--precision", "bf16", "--dense", "--no-progress"]) == 0
    assert main(["bench", "--precision", "bf16", "--size", "32", "32", "--reps", "1"]) == 2
    assert main(["profile", "--size", "32", "32", "--precision", "bf16"]) == 2


def test_profile_and_bench_take_fp16(capsys):
    assert main(["profile", "--size", "64", "64", "--precision", "fp16", "--json"]) == 0
    half = json.loads(capsys.readouterr().out)
    assert main(["profile", "--size", "64", "64", "--json"]) == 0
    full = json.loads(capsys.readouterr().out)
    assert half["dense_macs"] == full["dense_macs"]  # the dense run's work does not depend on precision
    assert main(["bench", "--size", "32", "32", "--hard-share", "0.3", "0.1", "--reps", "1", "--warmup", "0",
                 "--precision", "fp16", "--json", "--config", os.path.join(CONFIGS, "lc_tiny.yaml")]) == 0
    assert json.loads(capsys.readouterr().out)["speedup"] > 0


def test_eval_takes_fp16(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(f"_base_: {os.path.abspath(os.path.join(CONFIGS, 'lc_synthetic_small.yaml'))}\n"
                      "data: {synthetic: {num_val: 2}}\n")
    assert main(["eval", str(config), BUNDLED_CHECKPOINT, "--precision", "fp16", "--rho", "0.985", "--json",
                 "--out", str(tmp_path), "--no-progress", "--skip-data-check"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["miou"] > 0.5


def test_half_logits_are_scored_and_interpolated_in_float32():
    logits = (torch.randn(2, 5, 6, 7) * 8).half()
    torch.testing.assert_close(top_confidence(logits), top_confidence(logits.float()), atol=0, rtol=0)
    assert top_confidence(logits).dtype == torch.float32
    labels = assemble_labels(logits, (45, 50))
    assert torch.equal(labels, upsample_logits(logits, (45, 50)).max(dim=1).indices)
    assert upsample_logits(logits, (45, 50)).dtype == torch.float32


def test_a_half_precision_model_runs_both_paths():
    model = make_cascade().fused().half()
    images = random_images(batch=2).half()
    with torch.no_grad():
        sparse, dense = model(images, rho=0.9), model(images, rho=0.9, execution="dense")
    assert sparse.stage_logits[1].dtype == torch.float16 and sparse.logits.dtype == torch.float32
    assert (sparse.labels == dense.labels).double().mean() > 0.99


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_training(tmp_path, amp):
    """train.amp: autocast forward and loss (spconv's convolutions in float32 on the CPU), float32
    weights; fp16 keeps its gradient scaler in latest.pth for an exact resume."""
    from sparse_lc.checkpoint import load_checkpoint
    from sparse_lc.training import train

    summary = train(small_cfg(tmp_path, f"train.amp={amp}", "train.eval_at_end=false"), progress=False)
    assert all(p.dtype == torch.float32 for p in summary.model.parameters())
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if r["type"] == "train"]
    assert all(loss == loss for loss in losses) and losses[-1] < losses[0]
    assert ("scaler" in load_checkpoint(str(tmp_path / "latest.pth"))) == (amp == "fp16")


def test_tf32_scope_restores_the_settings():
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with tf32_disabled():
        assert not tf32_enabled()
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
