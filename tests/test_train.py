"""Training: phases, losses, checkpoints (atomic, resumable, safe), NaN stop, DDP on gloo."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml

from sparse_lc import load_config
from sparse_lc.checkpoint import load_checkpoint
from sparse_lc.data import labels_on_grid
from sparse_lc.training import TrainingDiverged, train
from sparse_lc.training import loop as train_module
from sparse_lc.training.losses import cascade_loss
from sparse_lc.training.schedule import build_phases, set_trainable
from sparse_lc.utils.distributed import DistInfo

from conftest import make_cascade, random_images

HERE = os.path.dirname(__file__)

SMALL = ["model.backbone=tiny", "model.num_classes=6", "model.head_channels=8", "model.rho=0.5",
         "data.num_workers=0", "data.synthetic.num_train=8", "data.synthetic.num_val=2",
         "data.synthetic.size=[32,32]", "train.crop_size=[32,32]", "train.batch_size=2",
         "train.iters=6", "train.warmup_iters=3", "train.checkpoint_interval=3", "train.log_interval=2",
         "train.optimizer=adamw", "train.lr=0.01", "eval.rhos=[0.5,1.0]"]


def make_folder_dataset(root, splits=("train", "val"), label_of=lambda n: 0):
    """Four black 32x32 images per split in mmsegmentation's folder layout."""
    for split in splits:
        (root / "img_dir" / split).mkdir(parents=True)
        (root / "ann_dir" / split).mkdir(parents=True)
        for n in range(4):
            cv2.imwrite(str(root / "img_dir" / split / f"{n}.png"), np.zeros((32, 32, 3), np.uint8))
            cv2.imwrite(str(root / "ann_dir" / split / f"{n}.png"), np.full((32, 32), label_of(n), np.uint8))
    return root


def folder_overrides(root):
    return ["data.type=folder", f"data.root={root}", "data.classes=[a,b,c,d,e,f]"]


def small_cfg(tmp_path, *extra):
    return load_config(overrides=[*SMALL, f"work_dir={tmp_path}", *extra])


@pytest.mark.slow
def test_training_writes_checkpoints_log_and_evaluation(tmp_path):
    summary = train(small_cfg(tmp_path), progress=False)
    for name in ("latest.pth", "final.pth", "log.jsonl", "config.yaml", "eval.json", "rho_sweep.png"):
        assert (tmp_path / name).is_file()
    latest = load_checkpoint(str(tmp_path / "latest.pth"))  # weights_only=True
    assert latest["iteration"] == 6 and {"model", "optimizer", "scheduler", "rng", "config"} <= set(latest)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["type"] == "train"]
    assert [r["iter"] for r in train_records] == [2, 4, 6]
    assert [r["phase"] for r in train_records] == ["deep-supervision", "cascade", "cascade"]
    assert train_records[0]["stage_share"] == [0.0, 0.0, 1.0]  # rho = 1 in the warm-up
    evals = [r for r in records if r["type"] == "eval"]
    assert [r["rho"] for r in evals] == [0.5, 1.0] and summary.evaluation[1]["rho"] == 1.0
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary files


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path, monkeypatch):
    straight = train(small_cfg(tmp_path / "a", "train.eval_at_end=false"), progress=False).model.state_dict()

    real_build = train_module.build_dataset
    calls = {"n": 0}

    def crashing_dataset(cfg, train):
        dataset = real_build(cfg, train)
        getitem = dataset.__class__.__getitem__

        class Crashing(dataset.__class__):
            def __getitem__(self, key):
                calls["n"] += 1
                if calls["n"] > 8:  # 4 iterations of batch 2, then the machine "dies"
                    raise RuntimeError("simulated crash")
                return getitem(self, key)
        dataset.__class__ = Crashing
        return dataset

    monkeypatch.setattr(train_module, "build_dataset", crashing_dataset)
    cfg = small_cfg(tmp_path / "b", "train.eval_at_end=false")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, progress=False)
    assert load_checkpoint(str(tmp_path / "b" / "latest.pth"))["iteration"] == 3
    monkeypatch.setattr(train_module, "build_dataset", real_build)
    resumed = train(cfg, resume=True, progress=False).model.state_dict()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


def _corrupt_loss_at(monkeypatch, call: int, corrupt) -> None:
    """Make the training loss ``corrupt(loss, result)`` at the ``call``-th step."""
    real_loss = train_module.cascade_loss
    calls = {"n": 0}

    def patched(result, labels, weights):
        calls["n"] += 1
        loss, stages = real_loss(result, labels, weights)
        return (corrupt(loss, result) if calls["n"] == call else loss), stages

    monkeypatch.setattr(train_module, "cascade_loss", patched)


def _assert_last_good_checkpoint(work_dir, iteration: int) -> None:
    kept = load_checkpoint(str(work_dir / "latest.pth"))
    assert kept["iteration"] == iteration
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    _corrupt_loss_at(monkeypatch, 5, lambda loss, result: loss * float("nan"))
    with pytest.raises(TrainingDiverged, match=r"iteration 5: the loss \(nan\) is not finite.*latest.pth"):
        train(small_cfg(tmp_path), progress=False)
    _assert_last_good_checkpoint(tmp_path, 3)


def test_nan_is_one_line_on_the_command_line(tmp_path, monkeypatch, capsys):
    from sparse_lc.cli import main
    monkeypatch.setattr(train_module, "cascade_loss",
                        lambda result, labels, weights: (result.stage_logits[0].sum() * float("inf"), torch.zeros(3)))
    args = [os.devnull, "--work-dir", str(tmp_path), "--no-progress"] + [a for o in SMALL for a in ("--set", o)]
    assert main(["train", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "iteration 1: the loss (inf) is not finite" in err
    assert "no checkpoint was written yet" in err


@pytest.mark.slow
def test_non_finite_gradients_stop_before_the_step(tmp_path, monkeypatch):
    """A finite loss with infinite gradients must not reach the weights (nor a checkpoint)."""
    # the loss stays finite (+ 0), its gradient becomes 0 * inf = NaN
    _corrupt_loss_at(monkeypatch, 5, lambda loss, result: loss + _InfGrad.apply(result.stage_logits[0].sum()) * 0)
    with pytest.raises(TrainingDiverged, match=r"iteration 5: the gradient norm is not finite.*latest.pth"):
        train(small_cfg(tmp_path), progress=False)
    _assert_last_good_checkpoint(tmp_path, 3)


class _InfGrad(torch.autograd.Function):
    """Identity forward, infinite gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


@pytest.mark.slow
def test_work_dir_rules(tmp_path, capsys):
    cfg = small_cfg(tmp_path, "train.eval_at_end=false")
    train(cfg, progress=False)
    with pytest.raises(ValueError, match=r"already holds a run \(latest.pth, final.pth, log.jsonl\): pass --resume"):
        train(cfg, progress=False)
    fresh = small_cfg(tmp_path / "new", "train.eval_at_end=false")
    train(fresh, resume=True, progress=False)  # nothing to resume yet: starts from scratch
    assert "starting from scratch" in capsys.readouterr().out
    with pytest.raises(Exception, match=r"cannot resume with different settings: train.mode, train.optimizer"):
        train(small_cfg(tmp_path, "train.mode=mc", "train.optimizer=sgd"), resume=True, progress=False)
    assert train(cfg, resume=True, progress=False).completed == []  # complete: nothing to do


@pytest.mark.slow
def test_resume_cuts_the_log_back(tmp_path, monkeypatch):
    real_build = train_module.build_dataset

    def crashing(cfg, train):
        dataset = real_build(cfg, train)
        if train:
            original = dataset.__class__.__getitem__
            counter = {"n": 0}

            class Crashing(dataset.__class__):
                def __getitem__(self, key):
                    counter["n"] += 1
                    if counter["n"] > 10:  # dies during iteration 6, after logging iteration 4
                        raise RuntimeError("simulated crash")
                    return original(self, key)
            dataset.__class__ = Crashing
        return dataset

    monkeypatch.setattr(train_module, "build_dataset", crashing)
    cfg = small_cfg(tmp_path, "train.eval_at_end=false")
    with pytest.raises(RuntimeError):
        train(cfg, progress=False)
    monkeypatch.setattr(train_module, "build_dataset", real_build)
    train(cfg, resume=True, progress=False)
    iters = [json.loads(line)["iter"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert iters == [2, 4, 6]


def test_missing_validation_split_fails_before_training(tmp_path):
    root = make_folder_dataset(tmp_path / "data", splits=("train",))
    cfg = small_cfg(tmp_path / "w", *folder_overrides(root))
    with pytest.raises(Exception, match=r"img_dir/val: not found"):
        train(cfg, progress=False)
    assert not (tmp_path / "w" / "latest.pth").exists()


def test_out_of_range_labels_are_found_before_the_first_iteration(tmp_path):
    """Both splits, every problem in one report, nothing written."""
    root = make_folder_dataset(tmp_path / "data", label_of=lambda n: 9 if n == 2 else 1)
    cfg = small_cfg(tmp_path / "w", *folder_overrides(root))
    from sparse_lc.data import DataError
    with pytest.raises(DataError, match=r"the data check found 2 problem\(s\) in 2 file\(s\)") as error:
        train(cfg, progress=False)
    assert [d.split("/data/")[1] for d in error.value.details] == [
        "ann_dir/train/2.png: label values [9] outside [0, 6) and 255",
        "ann_dir/val/2.png: label values [9] outside [0, 6) and 255"]
    assert not (tmp_path / "w").exists()
    with pytest.raises(DataError, match=r"label values \[9\]"):  # without the check: found mid-run
        train(cfg, progress=False, check_data=False)


def test_phases_of_each_mode(tmp_path):
    lc = build_phases(small_cfg(tmp_path))
    assert [(p.name, p.start, p.end, p.rho) for p in lc] == [("deep-supervision", 0, 3, 1.0), ("cascade", 3, 6, 0.5)]
    dense = build_phases(small_cfg(tmp_path, "train.mode=dense"))
    assert [(p.rho, p.stages) for p in dense] == [(1.0, (1, 2, 3))]
    mc = build_phases(small_cfg(tmp_path, "train.mode=mc"))
    assert [(p.start, p.end, p.stages, p.loss_weights) for p in mc] == [
        (0, 2, (1,), (1.0, 0.0, 0.0)), (2, 4, (2,), (0.0, 1.0, 0.0)), (4, 6, (3,), (0.0, 0.0, 1.0))]


def test_model_cascade_freezes_earlier_stages(tmp_path, monkeypatch):
    saved = {}
    real_save = train_module.save_checkpoint
    monkeypatch.setattr(train_module, "save_checkpoint", lambda path, state: (
        saved.__setitem__(state["iteration"], {k: v.clone() for k, v in state["model"].items()}),
        real_save(path, state)))
    train(small_cfg(tmp_path, "train.mode=mc", "train.eval_at_end=false", "train.checkpoint_interval=2"),
          progress=False)
    stage = {1: "backbone.layer1.0.conv1.weight", 2: "backbone.layer2.0.conv1.weight",
             3: "backbone.layer3.0.conv1.weight"}
    start = make_cascade(seed=0).state_dict()  # only shapes matter below
    assert set(saved) == {2, 4, 6} and start[stage[1]].shape == saved[2][stage[1]].shape
    assert torch.equal(saved[2][stage[1]], saved[6][stage[1]])      # stage 1 frozen after phase 1
    assert torch.equal(saved[4][stage[2]], saved[6][stage[2]])      # stage 2 frozen after phase 2
    assert not torch.equal(saved[2][stage[2]], saved[4][stage[2]])  # ...but trained in phase 2
    assert not torch.equal(saved[4][stage[3]], saved[6][stage[3]])  # stage 3 trained in phase 3
    assert torch.equal(saved[2]["backbone.layer1.0.bn1.running_mean"], saved[6]["backbone.layer1.0.bn1.running_mean"])
    model = make_cascade(num_classes=6, head_channels=8)
    set_trainable(model, build_phases(small_cfg(tmp_path, "train.mode=mc"))[2], freeze_bn=False)
    assert not any(p.requires_grad for m in model.stage_modules(1) + model.stage_modules(2) for p in m.parameters())
    assert all(p.requires_grad for m in model.stage_modules(3) for p in m.parameters())
    assert not model.heads[0].training and model.heads[2].training


@pytest.mark.slow
def test_frozen_bn_keeps_statistics(tmp_path):
    summary = train(small_cfg(tmp_path, "train.freeze_bn=true", "train.eval_at_end=false"), progress=False)
    bn = summary.model.backbone.layer1[0].bn1
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))  # never updated
    assert torch.equal(bn.weight.detach(), torch.ones_like(bn.weight))      # never trained


def test_loss_covers_only_the_pixels_each_stage_decides():
    model = make_cascade().train()
    images = random_images(batch=2, height=32, width=40)
    grid = (2, 4, 5)
    hard1 = torch.zeros(grid, dtype=torch.bool)
    hard1[:, :2] = True
    hard2 = hard1.clone()
    hard2[:, :, 2:] = False
    result = model(images, hard_masks=(hard1, hard2))
    for logits in result.stage_logits:
        logits.retain_grad()
    labels = torch.randint(0, 5, (2, 32, 40))
    loss, per_stage = cascade_loss(result, labels)
    loss.backward()
    grads = [logits.grad.abs().sum(1) > 0 for logits in result.stage_logits]  # [B, h, w]
    assert grads[0].all()
    assert torch.equal(grads[1], hard1) and torch.equal(grads[2], hard2)
    assert (per_stage > 0).all()


def test_labels_on_grid_take_cell_centres():
    labels = torch.arange(16 * 24).reshape(1, 16, 24)
    grid = labels_on_grid(labels)
    assert grid.shape == (1, 2, 3) and grid[0, 1, 2] == labels[0, 12, 20]
    assert (labels_on_grid(torch.zeros(1, 12, 12, dtype=torch.long))[0, 1, 1] == 255)  # padding is ignored


def _ddp_worker(rank, world, init_file, hard_pixels, out):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model = make_cascade(seed=0).train()
    net = train_module._wrap(model, DistInfo(rank, world, torch.device("cpu")))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    images = random_images(batch=1, height=32, width=32, seed=rank)
    hard1 = torch.zeros(1, 4, 4, dtype=torch.bool)
    if hard_pixels[rank]:
        hard1[0, 1:3] = True
    for _ in range(3):
        result = net(images, execution="sparse", hard_masks=(hard1, hard1))
        loss, _ = cascade_loss(result, torch.randint(0, 5, (1, 32, 32), generator=torch.Generator().manual_seed(rank)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.save(dict(model.named_parameters()), os.path.join(out, f"w{rank}.pth"))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("hard_pixels", [(False, True), (False, False)])
def test_ddp_with_a_rank_that_has_no_hard_pixel(tmp_path, hard_pixels):
    """Stages 2-3 unused on one rank (or on all): no hang, no error, parameters stay identical.
    (Buffers are DDP's to sync, at the next forward; train() broadcasts them at the end.)"""
    torch.multiprocessing.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), hard_pixels, str(tmp_path)), nprocs=2)
    w0, w1 = (torch.load(tmp_path / f"w{r}.pth", weights_only=True) for r in (0, 1))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    start = dict(make_cascade(seed=0).named_parameters())
    changed = not torch.equal(w0["backbone.layer3.0.conv1.weight"], start["backbone.layer3.0.conv1.weight"])
    assert changed == any(hard_pixels)


def _write_config(path, overrides):
    """The overrides as a YAML config file."""
    nested = {}
    for item in overrides:
        key, value = item.split("=", 1)
        *parents, leaf = key.split(".")
        d = nested
        for k in parents:
            d = d.setdefault(k, {})
        d[leaf] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(nested))


@pytest.mark.slow
def test_torchrun_two_gloo_processes(tmp_path):
    config, work = tmp_path / "cfg.yaml", tmp_path / "work"
    _write_config(config, SMALL)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--standalone", os.path.join(HERE, "ddp_train_script.py"), str(config), str(work)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0, w1 = (torch.load(work / f"rank{r}.pth", weights_only=True) for r in (0, 1))
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert load_checkpoint(str(work / "final.pth"))["iteration"] == 6
    assert load_checkpoint(str(work / "latest.pth"))["iteration"] == 6
    log = [json.loads(line) for line in (work / "log.jsonl").read_text().splitlines()]
    assert sum(r["type"] == "train" for r in log) == 3  # written once, by rank 0


def test_a_bad_file_read_in_a_worker_is_one_line(tmp_path, capsys):
    """A DataLoader worker re-raises with its whole traceback in the message; the CLI prints
    the original one-line message naming the file."""
    from sparse_lc.cli import main
    root = make_folder_dataset(tmp_path / "data")
    (root / "img_dir" / "train" / "1.png").write_bytes(b"broken")
    sets = [a for o in SMALL + folder_overrides(root) + ["data.num_workers=1"] for a in ("--set", o)]
    assert main(["train", os.devnull, "--work-dir", str(tmp_path / "w"), "--no-progress", "--skip-data-check",
                 *sets]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.endswith("img_dir/train/1.png: cannot decode image: not an image, or a format OpenCV cannot read")
