"""Evaluation: metrics from a confusion matrix, per-stage statistics, MACs, JSON and plot output."""
from __future__ import annotations

import json
import math
import os
import shutil
import types

import numpy as np
import torch

from sparse_lc import build_model, load_config
from sparse_lc.analysis import DenseMacs, count_macs
from sparse_lc.checkpoint import save_checkpoint
from sparse_lc.data import EvalTransform, SyntheticShapes
from sparse_lc.evaluation import boundary_mask, confusion_matrix, evaluate, metrics_from_confusion

from conftest import REPO, make_cascade, random_images


def test_metrics_from_a_known_confusion_matrix():
    label = torch.tensor([0, 0, 0, 1, 1, 2, 255, 255])
    pred = torch.tensor([0, 0, 1, 1, 1, 0, 2, 1])
    conf = confusion_matrix(pred, label, num_classes=4)
    assert conf.tolist() == [[2, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    m = metrics_from_confusion(conf)
    assert m["per_class_iou"][:3] == [2 / 4, 2 / 3, 0.0] and m["per_class_iou"][3] is None
    assert math.isclose(m["miou"], (0.5 + 2 / 3 + 0) / 3)
    assert math.isclose(m["pixel_acc"], 4 / 6) and math.isclose(m["mean_acc"], (2 / 3 + 1 + 0) / 3)


def test_boundary_mask_marks_three_pixels_each_side():
    label = np.zeros((20, 20), np.uint8)
    label[:, 10:] = 1
    b = boundary_mask(label)
    assert b[:, 7:13].all() and not b[:, :6].any() and not b[:, 14:].any()


def test_dense_macs_scale_exactly_with_padded_area():
    model = make_cascade("resnet18", num_classes=7).eval()
    dense = DenseMacs(model)
    for size in ((64, 96), (61, 77), (120, 40)):
        with torch.no_grad():
            _, counter = count_macs(model, random_images(1, *size), rho=1.0, execution="dense")
        assert dense(*size) == counter.total()


def test_evaluate_reports_every_field(tmp_path):
    model = make_cascade(num_classes=6).eval()
    dataset = SyntheticShapes("val", 3, (40, 48), transform=EvalTransform(model.pixel_mean, model.pixel_std))
    results = evaluate(model, dataset, [0.9, 1.0], progress=False)
    r09, r1 = results
    assert r09.rho == 0.9 and r1.rho == 1.0 and r09.num_images == 3
    assert math.isclose(sum(r09.stage_share), 1.0) and r1.stage_share == [0.0, 0.0, 1.0]
    assert r1.macs_cascade < r1.macs_dense * 1.0001 and r09.macs_cascade < r1.macs_cascade
    assert r1.macs_dense == r09.macs_dense == DenseMacs(model)(40, 48)
    assert len(r09.per_class_iou) == 6 and 0 <= r09.miou <= 1
    assert r09.boundary_share is None or 0 <= r09.boundary_share <= 1
    # the per-stage accuracies recombine into the pixel accuracy
    labelled = sum(s for s in r09.stage_share)  # shares are of all pixels; all synthetic pixels are labelled
    combined = sum(a * s for a, s in zip(r09.stage_accuracy, r09.stage_share) if a is not None) / labelled
    assert math.isclose(combined, r09.pixel_acc, rel_tol=1e-9)
    json.dumps([r.to_json() for r in results])  # JSON-serialisable


def _eval_setup(tmp_path):
    overrides = ["model.backbone=tiny", "model.num_classes=6", "model.head_channels=8",
                 "data.synthetic.num_val=2", "data.synthetic.size=[32,40]"]
    cfg = load_config(overrides=overrides)
    model = build_model(cfg["model"])
    ckpt = tmp_path / "final.pth"
    save_checkpoint(str(ckpt), {"model": model.state_dict(), "config": cfg})
    return [a for o in overrides for a in ("--set", o)], ckpt


def test_eval_cli_json_and_plot(tmp_path, capsys):
    from sparse_lc.cli import main
    sets, ckpt = _eval_setup(tmp_path)
    assert main(["eval", os.devnull, str(ckpt), "--rho", "0.5", "0.9", "1.0", "--json", "--no-progress",
                 "--out", str(tmp_path / "out"), *sets]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["rho"] for r in results] == [0.5, 0.9, 1.0]
    for r in results:
        assert {"rho", "miou", "per_class_iou", "pixel_acc", "stage_share", "stage_accuracy", "boundary_share",
                "macs_cascade", "macs_dense"} <= set(r)
        assert math.isclose(sum(r["stage_share"]), 1.0) and len(r["stage_accuracy"]) == 3
    assert (tmp_path / "out" / "eval.json").is_file()
    png = (tmp_path / "out" / "rho_sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_eval_cli_errors_are_one_line(tmp_path, capsys):
    from sparse_lc.cli import main
    sets, ckpt = _eval_setup(tmp_path)
    assert main(["eval", os.devnull, str(tmp_path / "missing.pth"), *sets]) == 2
    assert "missing.pth: no such checkpoint file" in capsys.readouterr().err
    other = ["--set", "model.num_classes=3"]
    assert main(["eval", os.devnull, str(ckpt), *sets, *other, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "final.pth: does not match the model" in err


def test_eval_leaves_the_training_runs_evaluation_alone(tmp_path, capsys):
    """The default --out is CKPT_STEM_eval, never the checkpoint's folder (where training wrote
    its own eval.json and plots); an earlier eval's files there are replaced, and named."""
    from sparse_lc.apis import BUNDLED_CHECKPOINT
    from sparse_lc.cli import main

    run = tmp_path / "work_dirs" / "lc"
    run.mkdir(parents=True)
    shutil.copy(BUNDLED_CHECKPOINT, run / "final.pth")
    (run / "eval.json").write_text("the training run's evaluation")
    argv = ["eval", os.path.join(REPO, "configs", "lc_synthetic_small.yaml"), str(run / "final.pth"),
            "--set", "data.synthetic.num_val=3", "--no-progress", "--skip-data-check"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert (run / "eval.json").read_text() == "the training run's evaluation"
    written = sorted(p.name for p in (run / "final_eval").iterdir())
    # default rhos start at 0 (stage 1 decides all), yet every stage gets its diagram: at the model's rho 0.985
    assert written == ["eval.json", "reliability_s1.png", "reliability_s2.png", "reliability_s3.png", "rho_sweep.png"]
    assert f"wrote {run / 'final_eval' / 'eval.json'}" in out and "replaced" not in err
    assert main(argv) == 0
    assert capsys.readouterr().err.strip().endswith(
        f"note: replaced eval.json, rho_sweep.png, reliability_s1.png, reliability_s2.png, reliability_s3.png in "
        f"{run / 'final_eval'} (from an earlier eval; --out writes elsewhere)")


def test_reliability_diagrams_are_drawn_where_every_stage_classified_pixels():
    from sparse_lc.visualization.reports import reliability_result

    def result(rho, counts):
        bins = [[[n, 0.9, 0.9]] for n in counts]  # one bin per stage
        return types.SimpleNamespace(rho=rho, reliability={"uncalibrated": bins})

    at0, at05, at09 = result(0.0, [10, 0, 0]), result(0.5, [10, 3, 0]), result(0.9, [10, 4, 2])
    assert reliability_result([at0, at05, at09]) is at09
    assert reliability_result([at0, at05, at09], rho=0.5) is at05
    assert reliability_result([at0, at05], rho=(0.95, 0.99)) is at0  # nothing better
