"""End-to-end training of a layer cascade, and the paper's two baselines.

``train.mode`` picks the schedule (all of it in one config):

* ``lc`` (the paper): ``warmup_iters`` of deep supervision (rho = 1: every stage learns on
  every pixel), then cascade fine-tuning at ``model.rho``: stage 1's loss covers all pixels,
  stage 2's the pixels stage 1 left hard, stage 3's those still hard; the sparse path computes
  gradients only where a stage computed.
* ``dense``: deep supervision for the whole run; test it at rho = 1 (the dense model).
* ``mc`` (model cascade): three equal phases; phase k trains only stage k (earlier stages
  frozen, batch norm included) on the pixels it receives at ``model.rho``.

SGD (momentum) or AdamW with DeepLab's poly schedule, restarted per phase in ``mc``. Runs as
one process or under ``torchrun`` (DDP; each process loads ``batch_size`` images).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from tqdm import tqdm

from ..builder import build_model
from ..cascade import LayerCascade, Rho, rho_pair
from ..checkpoint import load_model_weights, save_checkpoint
from ..config import dump_config
from ..data import build_dataset
from .dist import DistInfo, all_reduce_sum, broadcast_buffers, init_distributed
from .evaluation import evaluate
from .losses import cascade_loss
from .plots import save_eval_report
from .workdir import (CONFIG, FINAL, LATEST, LOG, JsonlLog, checkpoint_state, remove_stale_temporaries, restore,
                      resume_checkpoint)

TRAIN_MODES = ("lc", "dense", "mc")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass(frozen=True)
class Phase:
    name: str
    start: int                                # first iteration (0-based)
    end: int                                  # one past the last
    rho: Rho
    stages: Tuple[int, ...]                   # stages whose parameters train
    loss_weights: Tuple[float, float, float]


def build_phases(cfg: Dict[str, Any]) -> List[Phase]:
    t, rho = cfg["train"], cfg["model"]["rho"]
    iters, weights = t["iters"], tuple(t["stage_loss_weights"])
    if t["mode"] == "lc":
        warmup = min(t["warmup_iters"], iters)
        phases = [Phase("deep-supervision", 0, warmup, 1.0, (1, 2, 3), weights),
                  Phase("cascade", warmup, iters, rho, (1, 2, 3), weights)]
    elif t["mode"] == "dense":
        phases = [Phase("dense", 0, iters, 1.0, (1, 2, 3), weights)]
    elif t["mode"] == "mc":
        cuts = [round(iters * k / 3) for k in range(4)]
        one_hot = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
        phases = [Phase(f"mc-stage{k + 1}", cuts[k], cuts[k + 1], 0.0 if k == 0 else rho, (k + 1,), one_hot[k])
                  for k in range(3)]
    else:
        raise ValueError(f"train.mode must be one of {TRAIN_MODES}, got {t['mode']!r}")
    return [p for p in phases if p.end > p.start]


def phase_at(phases: List[Phase], iteration: int) -> Phase:
    return next(p for p in phases if p.start <= iteration < p.end)


class ResumableBatchSampler(Sampler):
    """Batches of dataset keys for iterations ``start_iter .. total_iters - 1``.

    Each epoch is a :class:`DistributedSampler` permutation (seeded by ``seed`` and the epoch,
    this process's shard, incomplete batches dropped); key = ``epoch * len(dataset) + index``,
    so each epoch augments differently and iteration i always gets the same batch: resuming
    at any iteration continues exactly.
    """

    def __init__(self, dataset_len: int, batch_size: int, seed: int, info: DistInfo,
                 start_iter: int, total_iters: int):
        self.sampler = DistributedSampler(range(dataset_len), num_replicas=info.world_size, rank=info.rank,
                                          shuffle=True, seed=seed, drop_last=True)
        self.dataset_len, self.batch_size = dataset_len, batch_size
        self.per_epoch = len(self.sampler) // batch_size
        if self.per_epoch == 0:
            raise ValueError(f"the training set has {dataset_len} images: too few for batch_size "
                             f"{batch_size} on {info.world_size} process(es)")
        self.start_iter, self.total_iters = start_iter, total_iters

    def __len__(self) -> int:
        return self.total_iters - self.start_iter

    def __iter__(self) -> Iterator[List[int]]:
        iteration = self.start_iter
        while iteration < self.total_iters:
            epoch, offset = divmod(iteration, self.per_epoch)
            self.sampler.set_epoch(epoch)
            indices = list(self.sampler)
            for b in range(offset, self.per_epoch):
                if iteration >= self.total_iters:
                    return
                yield [epoch * self.dataset_len + i for i in indices[b * self.batch_size:(b + 1) * self.batch_size]]
                iteration += 1


def build_optimizer(model: torch.nn.Module, t: Dict[str, Any]) -> torch.optim.Optimizer:
    if t["optimizer"] == "sgd":
        return torch.optim.SGD(model.parameters(), lr=t["lr"], momentum=t["momentum"], weight_decay=t["weight_decay"])
    if t["optimizer"] == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=t["lr"], weight_decay=t["weight_decay"])
    raise ValueError(f"train.optimizer must be sgd or adamw, got {t['optimizer']!r}")


def poly_schedule(phases: List[Phase], cfg: Dict[str, Any]):
    """LR factor of an iteration: DeepLab's poly decay over the run (``lc``, ``dense``), or over
    each phase (``mc``, whose phases train separate stages from scratch)."""
    t = cfg["train"]

    def factor(iteration: int) -> float:
        if t["mode"] == "mc":
            p = phase_at(phases, min(iteration, t["iters"] - 1))
            progress = (iteration - p.start) / (p.end - p.start)
        else:
            progress = iteration / t["iters"]
        return max(1.0 - progress, 0.0) ** t["poly_power"]
    return factor


def set_trainable(model: LayerCascade, phase: Phase, freeze_bn: bool) -> None:
    """Train mode for the stages of ``phase``; frozen stages (and BN, if ``freeze_bn``) stay in
    eval mode with ``requires_grad=False``."""
    model.train()
    for stage in (1, 2, 3):
        trainable = stage in phase.stages
        for module in model.stage_modules(stage):
            module.train(trainable)
            for p in module.parameters():
                p.requires_grad_(trainable)
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
                for p in m.parameters():
                    p.requires_grad_(False)


def _wrap(model: LayerCascade, info: DistInfo) -> torch.nn.Module:
    """DDP across processes. ``find_unused_parameters``: a process whose batch has no hard pixel
    runs no stage 2-3 and must still take part in their gradient all-reduce."""
    if not info.distributed:
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


@dataclass
class TrainSummary:
    model: LayerCascade                           # the trained model (unwrapped from DDP)
    work_dir: str
    iterations: int
    final_checkpoint: str
    evaluation: Optional[List[Dict[str, Any]]]    # EvalResult.to_json() per rho, if evaluated


def _check_finite(value: torch.Tensor, what: str, iteration: int, info: DistInfo, latest: Optional[str]) -> None:
    """Stop every process together when ``value`` (a loss, a gradient norm) is NaN or infinite
    on any process; the message names the process(es)."""
    bad = torch.zeros(info.world_size, device=value.device)
    bad[info.rank] = 0.0 if torch.isfinite(value) else 1.0
    bad = all_reduce_sum(bad, info)
    if bad.sum().item() > 0:
        kept = f"the last good checkpoint is {latest}" if latest else "no checkpoint was written yet"
        where = "" if not info.distributed else f" on rank(s) {[int(r) for r in bad.nonzero().flatten()]}"
        raise TrainingDiverged(f"iteration {iteration}: {what} is not finite{where}; training stopped, {kept}")


def train(cfg: Dict[str, Any], resume: bool = False, device: str = "auto", progress: bool = True) -> TrainSummary:
    """Train the model of ``cfg``; writes ``latest.pth``, ``final.pth``, ``log.jsonl``,
    ``config.yaml`` and the evaluation (``eval.json``, ``rho_sweep.png``) to ``cfg["work_dir"]``
    (main process). ``resume`` continues from ``latest.pth`` (or starts fresh if there is
    none yet). Returns the model and where things went."""
    info = init_distributed(device)
    t, work_dir = cfg["train"], cfg["work_dir"]
    latest, final = os.path.join(work_dir, LATEST), os.path.join(work_dir, FINAL)
    state = resume_checkpoint(work_dir, resume, cfg)
    checkpoint = latest if state is not None else None
    torch.manual_seed(t["seed"])
    model = build_model(cfg["model"]).to(info.device)
    if t["load_from"] and checkpoint is None:
        load_model_weights(model, t["load_from"])
    dataset = build_dataset(cfg, train=True)
    evaluates = t["eval_at_end"] or bool(t["eval_interval"])
    val_dataset = build_dataset(cfg, train=False) if evaluates else None  # fail now, not after training
    phases = build_phases(cfg)
    optimizer = build_optimizer(model, t)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_schedule(phases, cfg))
    start = restore(latest, state, model, optimizer, scheduler) if state is not None else 0
    del state  # the weights now live in the model; do not keep a second copy for the whole run
    if start >= t["iters"]:
        raise ValueError(f"{latest}: training already finished ({start} of {t['iters']} iterations)")
    if info.is_main:
        os.makedirs(work_dir, exist_ok=True)
        remove_stale_temporaries(work_dir)
        with open(os.path.join(work_dir, CONFIG), "w", encoding="utf-8") as f:
            f.write(dump_config(cfg))
    log = JsonlLog(os.path.join(work_dir, LOG), info.is_main, keep_until=start if checkpoint else None)
    sampler = ResumableBatchSampler(len(dataset), t["batch_size"], t["seed"], info, start, t["iters"])
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg["data"]["num_workers"])
    bar = tqdm(total=t["iters"], initial=start, desc="train", unit="it", disable=not (progress and info.is_main))
    saved = checkpoint
    phase, net, window = None, model, []
    for iteration, (images, labels) in zip(range(start, t["iters"]), loader):
        if phase is None or not phase.start <= iteration < phase.end:
            phase = phase_at(phases, iteration)
            set_trainable(model, phase, t["freeze_bn"])
            net = _wrap(model, info)
        step = _step(net, optimizer, scheduler, images.to(info.device), labels.to(info.device), phase,
                     _execution(t["execution"], phase.rho), info, iteration + 1, saved)
        window.append(step)
        done = iteration + 1
        bar.update(1)
        bar.set_postfix(loss=f"{step[0]:.3f}", phase=phase.name, shares="/".join(f"{100 * s:.0f}" for s in step[2]))
        if done % t["log_interval"] == 0 or done == t["iters"]:
            log.write(_train_record(done, phase, optimizer, window))
            window = []
        if done % t["checkpoint_interval"] == 0 or done == t["iters"]:
            if info.is_main:
                save_checkpoint(latest, checkpoint_state(model, optimizer, scheduler, done, cfg))
            saved = latest
        if t["eval_interval"] and done % t["eval_interval"] == 0 and done != t["iters"]:
            _evaluate_and_log(model, val_dataset, cfg, info, log, done, progress)
            set_trainable(model, phase, t["freeze_bn"])
    bar.close()
    broadcast_buffers(model, info)
    if info.is_main:
        save_checkpoint(final, {"model": model.state_dict(), "iteration": t["iters"], "config": cfg})
    evaluation = _evaluate_and_log(model, val_dataset, cfg, info, log, t["iters"], progress) if evaluates else None
    return TrainSummary(model, work_dir, t["iters"], final, evaluation)


def _step(net, optimizer, scheduler, images, labels, phase: Phase, execution: str, info: DistInfo,
          iteration: int, saved: Optional[str]) -> Tuple[float, torch.Tensor, Tuple[float, float, float], float]:
    """One optimisation step; returns (loss, per-stage losses, stage shares, seconds)."""
    tic = time.perf_counter()
    result = net(images, rho=phase.rho, execution=execution)
    loss, stage_losses = cascade_loss(result, labels, phase.loss_weights)
    _check_finite(loss.detach(), f"the loss ({float(loss.detach()):.4g})", iteration, info, saved)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    trainable = [p for p in optimizer.param_groups[0]["params"] if p.grad is not None]
    grad_norm = torch.nn.utils.clip_grad_norm_(trainable, float("inf")) if trainable else loss.new_zeros(())
    _check_finite(grad_norm, "the gradient norm", iteration, info, saved)
    optimizer.step()
    scheduler.step()
    return float(loss.detach()), stage_losses, result.stage_shares, time.perf_counter() - tic


def _execution(setting: str, rho: Rho) -> str:
    """``auto``: dense while every pixel goes through every stage (rho = 1: the same result,
    less overhead), sparse otherwise."""
    if setting != "auto":
        return setting
    return "dense" if min(rho_pair(rho)) >= 1.0 else "sparse"


def _train_record(done: int, phase: Phase, optimizer, window) -> Dict[str, Any]:
    n = len(window)
    return {"type": "train", "iter": done, "phase": phase.name, "rho": phase.rho,
            "lr": optimizer.param_groups[0]["lr"],
            "loss": sum(w[0] for w in window) / n,
            "loss_stage": (sum(w[1] for w in window) / n).tolist(),
            "stage_share": [sum(w[2][k] for w in window) / n for k in range(3)],
            "sec_per_iter": sum(w[3] for w in window) / n}


def _evaluate_and_log(model: LayerCascade, dataset, cfg, info: DistInfo, log: JsonlLog, done: int,
                      progress: bool) -> List[Dict[str, Any]]:
    broadcast_buffers(model, info)  # every process evaluates rank 0's model
    rhos = cfg["eval"]["rhos"] or [cfg["model"]["rho"], 1.0]
    results = evaluate(model, dataset, rhos, info, progress)
    if info.is_main:
        save_eval_report(results, cfg["work_dir"], title=f"{os.path.basename(cfg['work_dir'])}, iteration {done}")
    for r in results:
        log.write({"type": "eval", "iter": done, **r.to_json()})
    return [r.to_json() for r in results]
