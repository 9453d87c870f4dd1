"""Calibrated early decisions: temperatures, ECE, per-stage thresholds, their search and storage."""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

from sparse_lc import build_model, load_config, load_model
from sparse_lc.apis import CalibrationWarning
from sparse_lc.checkpoint import save_checkpoint
from sparse_lc.data import EvalTransform, SyntheticShapes
from sparse_lc.evaluation import calibrate, evaluate
from sparse_lc.evaluation.operating_point import (
    OperatingPoint,
    apply_operating_point,
    operating_point_path,
    read_operating_point,
    save_operating_point,
)
from sparse_lc.evaluation.temperature import T_MAX, T_MIN, Reliability, fit_temperature, reliability_of
from sparse_lc.evaluation.thresholds import ThresholdPoint, choose_thresholds, explore_thresholds, pareto_front
from sparse_lc.rho import canonical_rho, format_rho, rho_pair, top_confidence
from sparse_lc.testing import assert_sparse_matches_dense

from conftest import make_cascade, random_images


# ----------------------------------------------------------------------------- thresholds
def test_rho_pair_forms():
    assert rho_pair(0.9) == (0.9, 0.9) and rho_pair([0.8, 0.99]) == (0.8, 0.99)
    assert rho_pair(np.float32(0.5)) == (0.5, 0.5) and rho_pair(torch.tensor(0.5)) == (0.5, 0.5)
    assert canonical_rho([0.9, 0.9]) == 0.9 and canonical_rho((0.8, 0.99)) == (0.8, 0.99)
    assert format_rho(0.985) == "0.985" and format_rho((0.9, 0.99)) == "0.9/0.99"
    for bad in (1.5, (0.9,), (0.9, 0.9, 0.9), (0.5, -0.1)):
        with pytest.raises(ValueError, match="rho"):
            rho_pair(bad)


def test_two_thresholds_and_temperatures_decide_as_documented():
    model = make_cascade(seed=4).eval()
    model.temperatures = (2.0, 0.5, 3.0)
    images = random_images(seed=2)
    with torch.no_grad():
        result = model(images, rho=(0.6, 0.95))
    logits1, logits2, _ = result.stage_logits
    hard1 = (logits1 / 2.0).softmax(1).amax(1) <= 0.6
    assert torch.equal(result.hard_masks[0], hard1) and hard1.any() and not hard1.all()
    hard2 = hard1 & ((logits2 / 0.5).softmax(1).amax(1) <= 0.95)
    assert torch.equal(result.hard_masks[1], hard2) and hard2.any()
    # temperatures change decisions only: a stage's labels come from its unscaled logits
    assert torch.equal(top_confidence(logits1, 2.0) <= 0.6, hard1)
    with torch.no_grad():
        same = model(images, rho=(0.6, 0.6))
        single = model(images, rho=0.6)
    assert torch.equal(same.logits, single.logits) and torch.equal(same.stage_map, single.stage_map)


@pytest.mark.parametrize("rho,temperatures,halo", [((0.7, 0.95), (1.0, 1.0, 1.0), 0),
                                                   ((0.95, 0.6), (1.7, 0.8, 1.0), 2),
                                                   ((0.9, 0.99), (2.5, 2.5, 1.0), 4)])
def test_sparse_equals_dense_with_two_thresholds_temperatures_and_halo(rho, temperatures, halo):
    model = make_cascade(dilations=(2, 4), seed=7, halo=halo).eval()
    model.temperatures = temperatures
    images = random_images(seed=11)
    assert_sparse_matches_dense(model, images, rhos=[rho], halos=(halo,), hard_shares=(), gradients=False,
                                dtype=torch.float32)
    with torch.no_grad():
        result = model(images, rho=rho)
    assert result.hard_masks[1].any()
    if halo:
        assert (result.active_masks[1] & ~result.hard_masks[0]).any()


def test_temperatures_are_validated():
    model = make_cascade()
    with pytest.raises(ValueError, match="three positive"):
        model.temperatures = (1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="three positive"):
        model.temperatures = (1.0, 1.0)


# ------------------------------------------------------------------------- calibration
def test_reliability_bins_and_ece_by_hand():
    r = Reliability(bins=2)
    r.add(torch.tensor([0.3, 0.4, 0.9, 1.0]), torch.tensor([False, True, True, True]))
    count, confidence, accuracy = r.curve()
    assert count.tolist() == [2, 2]
    assert confidence.tolist() == pytest.approx([0.35, 0.95]) and accuracy.tolist() == [0.5, 1.0]
    # ECE = 2/4 |0.5 - 0.35| + 2/4 |1 - 0.95|
    assert r.ece() == pytest.approx(0.5 * 0.15 + 0.5 * 0.05)
    assert Reliability().ece() is None


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    gen = torch.Generator().manual_seed(0)
    logits = 4.0 * torch.randn(20000, 6, generator=gen)
    labels = torch.multinomial((logits / 2.5).softmax(1), 1, generator=gen)[:, 0]
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(2.5, rel=0.05)
    assert reliability_of(logits, labels, fitted).ece() < 0.5 * reliability_of(logits, labels).ece()
    assert fit_temperature(torch.zeros(0, 6), torch.zeros(0, dtype=torch.long)) == 1.0
    separable = torch.eye(6).repeat(50, 1) * 5.0  # always right: the NLL falls as T -> 0
    assert T_MIN <= fit_temperature(separable, torch.arange(6).repeat(50)) < 1.0
    assert fit_temperature(separable, (torch.arange(6).repeat(50) + 1) % 6) == T_MAX  # always wrong


def _dataset(model, split="calib", n=3, size=(40, 48)):
    return SyntheticShapes(split, n, size, transform=EvalTransform(model.pixel_mean, model.pixel_std))


def test_threshold_search_equals_evaluate_at_every_pair():
    """The search shares stages between pairs; its numbers must be evaluate()'s exactly."""
    model = make_cascade(num_classes=6, seed=3, halo=1).eval()
    model.temperatures = (1.5, 0.7, 1.0)
    dataset = _dataset(model)
    grid = (0.6, 0.9, 1.0)
    points = explore_thresholds(model, dataset, grid, progress=False)
    assert len(points) == 9
    results = evaluate(model, dataset, [p.rho for p in points], progress=False)
    for point, result in zip(points, results):
        assert point.miou == pytest.approx(result.miou, abs=1e-12), point.rho
        assert point.macs == pytest.approx(result.macs_cascade) and point.macs_dense == result.macs_dense
        assert point.stage_share == pytest.approx(result.stage_share)
    again = evaluate(model, dataset, [0.9, (0.9, 0.9), [0.9, 0.9]], progress=False)
    assert len(again) == 1 and again[0].num_images == len(dataset)  # one threshold written three ways
    shares = {p.rho: p.stage_share for p in points}
    assert shares[(1.0, 1.0)] == [0.0, 0.0, 1.0] and 0 < shares[(0.9, 0.6)][1] < 1


def _point(rho, miou, macs):
    return ThresholdPoint(rho=rho, miou=miou, macs=macs, macs_dense=100.0, stage_share=[1.0, 0.0, 0.0])


def test_choose_and_pareto_by_hand():
    points = [_point((1.0, 1.0), 0.80, 100), _point((0.9, 0.9), 0.795, 40), _point((0.9, 0.99), 0.81, 45),
              _point((0.5, 0.5), 0.60, 10), _point((0.7, 0.9), 0.78, 30), _point((0.8, 0.8), 0.70, 35)]
    assert [p.rho for p in pareto_front(points)] == [(0.5, 0.5), (0.7, 0.9), (0.9, 0.9), (0.9, 0.99)]
    assert choose_thresholds(points, 0.80, max_drop=1.0).rho == (0.9, 0.9)     # cheapest >= 79.0
    assert choose_thresholds(points, 0.80, max_drop=2.5).rho == (0.7, 0.9)     # cheapest >= 77.5
    assert choose_thresholds(points, 0.80, budget=0.35).rho == (0.7, 0.9)      # best with <= 35 MACs
    assert choose_thresholds(points, 0.80, budget=0.5).rho == (0.9, 0.99)
    with pytest.raises(ValueError, match="best is 81.0"):
        choose_thresholds(points, 0.90, max_drop=1.0)
    with pytest.raises(ValueError, match="cheapest needs 0.100"):
        choose_thresholds(points, 0.80, budget=0.05)
    with pytest.raises(ValueError, match="exactly one"):
        choose_thresholds(points, 0.80)


def test_calibrate_fits_an_overconfident_model_and_meets_its_criterion():
    model = make_cascade(num_classes=6, seed=5).eval()  # random classifiers scaled x30: overconfident
    dataset = _dataset(model, n=4)
    report = calibrate(model, dataset, max_drop=5.0, grid=(0.5, 0.9, 0.99), progress=False)
    point = report.operating_point
    assert all(t > 1.0 for t in point.temperatures[:1])  # overconfidence is cooled down
    assert point.ece_after[0] < point.ece_before[0]
    assert model.temperatures == tuple(point.temperatures) and rho_pair(model.rho) == tuple(point.rho)
    assert len(report.points) == 16  # 1 is always added to the grid
    assert report.chosen.miou >= point.reference_miou - 0.05
    cheaper = [p for p in report.points if p.miou >= point.reference_miou - 0.05 and p.macs < report.chosen.macs]
    assert not cheaper
    fresh = make_cascade(num_classes=6, seed=5).eval()
    with pytest.raises(ValueError, match="no thresholds"):
        calibrate(fresh, dataset, budget=0.01, grid=(0.5, 0.9), progress=False)
    assert fresh.temperatures == (1.0, 1.0, 1.0) and fresh.rho == 0.985  # a failed calibration changes nothing
    budget = calibrate(model, dataset, budget=0.8, grid=(0.5, 0.9, 0.99), progress=False)
    assert budget.chosen.macs_ratio <= 0.8
    assert budget.chosen.miou == max(p.miou for p in budget.points if p.macs_ratio <= 0.8)


# --------------------------------------------------------------------- the operating point
def _checkpoint(tmp_path, halo=0):
    overrides = ["model.backbone=tiny", "model.num_classes=6", "model.head_channels=8", f"model.halo={halo}",
                 "data.synthetic.num_val=2", "data.synthetic.num_calib=2", "data.calib_split=calib",
                 "data.synthetic.size=[32,40]"]
    cfg = load_config(overrides=overrides)
    model = build_model(cfg["model"])
    ckpt = tmp_path / "final.pth"
    save_checkpoint(str(ckpt), {"model": model.state_dict(), "config": cfg})
    return [a for o in overrides for a in ("--set", o)], str(ckpt)


def _point_for(halo=0):
    return OperatingPoint(temperatures=[1.5, 2.0, 1.0], rho=[0.9, 0.99], halo=halo, criterion="max_drop=1",
                          miou=0.8, macs_ratio=0.3, stage_share=[0.7, 0.2, 0.1], reference_miou=0.81,
                          reference="test", split="calib", num_images=2)


def test_operating_point_round_trip_and_load_model_applies_it(tmp_path):
    _, ckpt = _checkpoint(tmp_path)
    path = save_operating_point(_point_for(), ckpt)
    assert path == operating_point_path(ckpt) == str(tmp_path / "final.calibration.json")
    assert read_operating_point(path) == _point_for().__class__(**json.load(open(path)))
    model, _ = load_model(checkpoint=ckpt)
    assert model.temperatures == (1.5, 2.0, 1.0) and model.rho == (0.9, 0.99)
    assert model.operating_point.criterion == "max_drop=1"
    plain, _ = load_model(checkpoint=ckpt, calibrated=False)
    assert plain.temperatures == (1.0, 1.0, 1.0) and plain.operating_point is None


def test_a_calibration_that_does_not_fit_is_not_applied(tmp_path):
    _, ckpt = _checkpoint(tmp_path)
    halo2 = save_operating_point(_point_for(halo=2), ckpt)  # each halo has its own file
    assert halo2 == str(tmp_path / "final.halo2.calibration.json")
    model, _ = load_model(checkpoint=ckpt)
    assert model.operating_point is None and model.temperatures == (1.0, 1.0, 1.0)
    model, _ = load_model(checkpoint=ckpt, overrides=["model.halo=2"])
    assert model.operating_point.halo == 2 and model.rho == (0.9, 0.99)
    os.replace(halo2, operating_point_path(ckpt))  # a file renamed by hand is still checked
    with pytest.warns(CalibrationWarning, match="chosen for halo 2, the model has halo 0"):
        model, _ = load_model(checkpoint=ckpt)
    assert model.temperatures == (1.0, 1.0, 1.0)
    save_operating_point(_point_for(), ckpt)
    with open(ckpt, "ab") as f:  # the weights change after calibration
        f.write(b"\0")
    with pytest.warns(CalibrationWarning, match="made for other weights"):
        model, _ = load_model(checkpoint=ckpt)
    assert model.operating_point is None
    zero_temperature = json.dumps({**dataclasses.asdict(_point_for()), "temperatures": [1, 0, 1]})
    for text in ("{not json", "[1, 2]", zero_temperature):
        with open(operating_point_path(ckpt), "w") as f:
            f.write(text)
        with pytest.warns(CalibrationWarning, match="not a calibration file"):
            load_model(checkpoint=ckpt)


def test_apply_operating_point():
    model = make_cascade()
    apply_operating_point(model, _point_for())
    assert model.temperatures == (1.5, 2.0, 1.0) and model.rho == (0.9, 0.99)


# --------------------------------------------------------------------------------- CLI
def test_calibrate_cli_writes_what_eval_and_profile_pick_up(tmp_path, capsys):
    from sparse_lc.cli import main
    sets, ckpt = _checkpoint(tmp_path)
    out = tmp_path / "cal"
    assert main(["calibrate", os.devnull, ckpt, "--budget", "0.8", "--grid", "0.5", "0.9", "--out", str(out),
                 "--no-progress", *sets]) == 0
    printed = capsys.readouterr().out
    assert "chosen (budget=0.8)" in printed and "reference:" in printed
    point = read_operating_point(operating_point_path(ckpt))
    assert point.criterion == "budget=0.8" and point.macs_ratio <= 0.8 and point.split == "calib"
    for name in ("thresholds.json", "pareto.png", "reliability_s1.png"):
        assert (out / name).is_file(), name
    explored = json.load(open(out / "thresholds.json"))
    assert len(explored["points"]) == 9 and explored["chosen"]["rho"] == point.rho

    assert main(["eval", os.devnull, ckpt, "--json", "--no-progress", "--out", str(tmp_path / "ev"), *sets]) == 0
    captured = capsys.readouterr()
    assert "calibrated: rho" in captured.err
    results = json.loads(captured.out)
    assert results[0]["rho"] == canonical_rho(point.rho) or results[0]["rho"] == point.rho
    assert results[0]["temperatures"] == point.temperatures and len(results[0]["ece"]) == 3
    assert (tmp_path / "ev" / "reliability_s1.png").is_file()

    assert main(["profile", "--checkpoint", ckpt, "--size", "32", "40", "--json", "--no-calibration"]) == 0
    assert "calibrated" not in capsys.readouterr().err


def test_rho_pairs_on_the_command_line(tmp_path, capsys):
    from sparse_lc.cli import main
    sets, ckpt = _checkpoint(tmp_path)
    assert main(["eval", os.devnull, ckpt, "--rho", "0.9,0.99", "1", "--json", "--no-progress",
                 "--out", str(tmp_path / "ev"), *sets]) == 0
    assert [r["rho"] for r in json.loads(capsys.readouterr().out)] == [[0.9, 0.99], 1.0]
    with pytest.raises(SystemExit):
        main(["eval", os.devnull, ckpt, "--rho", "0.9,1.2", *sets])
    assert "R or R1,R2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["calibrate", os.devnull, ckpt, "--grid", "0.9", "1.5", *sets])
    assert "'1.5'" in capsys.readouterr().err
