"""The training loop: one config in, a trained cascade and its work dir out.

``train.mode`` lays out the phases (:mod:`.schedule`: the paper's ``lc`` and the baselines
``dense`` and ``mc``); in a cascade phase the sparse path computes gradients only where a stage
computed. SGD (momentum) or AdamW with DeepLab's poly schedule. Runs as one process or under
``torchrun`` (DDP; each process loads ``batch_size`` images).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..builder import build_model
from ..cascade import LayerCascade
from ..checkpoint import load_model_weights, save_checkpoint
from ..config import check_training, dump_config
from ..data import build_dataset
from ..data.check import require_valid_data
from ..errors import Interrupted, TrainingDiverged
from ..evaluation import evaluate
from ..rho import Rho, rho_pair
from ..utils.distributed import DistInfo, all_reduce_sum, broadcast_buffers, init_distributed
from ..utils.interrupts import stop_requests
from ..visualization import save_eval_report
from .losses import cascade_loss
from .sampler import ResumableBatchSampler
from .schedule import Phase, build_optimizer, build_phases, phase_at, poly_schedule, set_trainable
from .workdir import (
    CONFIG,
    EVAL,
    FINAL,
    LATEST,
    LOG,
    JsonlLog,
    check_work_dir,
    checkpoint_state,
    remove_stale_temporaries,
    restore,
    resume_checkpoint,
    work_dir_lock,
)

AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}  # train.amp


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
    evaluation: Optional[List[Dict[str, Any]]]    # EvalResult.to_json() per rho, if evaluated now
    completed: List[str] = field(default_factory=lambda: [FINAL, EVAL])  # end-of-run files written now


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


def train(cfg: Dict[str, Any], resume: bool = False, device: str = "auto", progress: bool = True,
          check_data: bool = True) -> TrainSummary:
    """Train the model of ``cfg``; writes ``latest.pth``, ``final.pth``, ``log.jsonl``,
    ``config.yaml`` and the evaluation (``eval.json``, ``rho_sweep.png``) to ``cfg["work_dir"]``
    (main process). ``resume`` continues from ``latest.pth`` (or starts fresh if there is
    none yet); resumed after the last iteration, it completes what is missing.

    Before anything is written: the training combinations of the config are checked, the work
    dir must not hold another run (or be in use), and with ``check_data`` every file of both
    splits is read once (cached) and every problem reported in one DataError. Ctrl-C (one
    process) finishes the iteration in progress, saves latest.pth and raises :class:`Interrupted`,
    naming the iteration and how to continue; a second Ctrl-C, or any under DDP, raises at once.
    Returns the model and where things went.
    """
    info = init_distributed(device)
    check_training(cfg)
    t, work_dir = cfg["train"], cfg["work_dir"]
    phases = build_phases(cfg)  # an unknown train.mode fails here, before any work
    check_work_dir(work_dir, resume)
    torch.manual_seed(t["seed"])
    model = build_model(cfg["model"]).to(info.device)
    dataset = build_dataset(cfg, train=True)
    evaluates = t["eval_at_end"] or bool(t["eval_interval"])
    val_dataset = build_dataset(cfg, train=False) if evaluates else None  # fail now, not after training
    if check_data:
        require_valid_data([dataset, val_dataset], cfg["model"]["num_classes"], progress and info.is_main)
    with work_dir_lock(work_dir, enabled=info.is_main):
        state = resume_checkpoint(work_dir, resume, cfg)  # again, under the lock: another run may have ended
        if t["load_from"] and state is None:
            load_model_weights(model, t["load_from"])
        optimizer = build_optimizer(model, t)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_schedule(phases, cfg))
        scaler = torch.amp.GradScaler(info.device.type, enabled=t["amp"] == "fp16")
        start = restore(os.path.join(work_dir, LATEST), state, model, optimizer, scheduler, scaler) if state else 0
        run = _Run(cfg, info, model, optimizer, scheduler, scaler, phases, progress,
                   saved=start if state is not None else None)
        del state  # the weights now live in the model; do not keep a second copy for the whole run
        if info.is_main:
            remove_stale_temporaries(work_dir)
            with open(os.path.join(work_dir, CONFIG), "w", encoding="utf-8") as f:
                f.write(dump_config(cfg))
        log = JsonlLog(os.path.join(work_dir, LOG), info.is_main, keep_until=start if run.saved is not None else None)
        if start < t["iters"]:
            run.loop(dataset, val_dataset, log, start)
        return run.finish(val_dataset, log, evaluates)


class _Run:
    """One training run's moving parts: the loop over iterations, and what ends the run."""

    def __init__(self, cfg, info: DistInfo, model: LayerCascade, optimizer, scheduler, scaler, phases: List[Phase],
                 progress: bool, saved: Optional[int]):
        self.cfg, self.info, self.model, self.optimizer, self.scheduler = cfg, info, model, optimizer, scheduler
        self.scaler = scaler  # the gradient scaler of train.amp = fp16 (disabled otherwise)
        self.phases, self.progress = phases, progress
        self.saved = saved  # iteration of the last checkpoint written (None: none yet)
        work_dir = cfg["work_dir"]
        self.latest, self.final = os.path.join(work_dir, LATEST), os.path.join(work_dir, FINAL)

    def loop(self, dataset, val_dataset, log: JsonlLog, start: int) -> None:
        t, info, model = self.cfg["train"], self.info, self.model
        sampler = ResumableBatchSampler(len(dataset), t["batch_size"], t["seed"], info, start, t["iters"])
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=self.cfg["data"]["num_workers"])
        bar = tqdm(total=t["iters"], initial=start, desc="train", unit="it",
                   disable=not (self.progress and info.is_main))
        phase, net, window, done = None, model, [], start
        # One process stops between iterations and saves there; under DDP the ranks would have to
        # agree on that iteration first, so there Ctrl-C interrupts at once.
        stopping = stop_requests(enabled=not info.distributed,
                                 message="stopping after this iteration, with a checkpoint (Ctrl-C again: at once)")
        try:
            with stopping as stop:
                for iteration, (images, labels) in zip(range(start, t["iters"]), loader):
                    if phase is None or not phase.start <= iteration < phase.end:
                        phase = phase_at(self.phases, iteration)
                        set_trainable(model, phase, t["freeze_bn"])
                        net = _wrap(model, info)
                    saved = self.latest if self.saved is not None else None
                    step = _step(net, self.optimizer, self.scheduler, self.scaler, images.to(info.device),
                                 labels.to(info.device), phase, _execution(t["execution"], phase.rho), info,
                                 iteration + 1, saved, AMP_DTYPES.get(t["amp"]))
                    window.append(step)
                    done = iteration + 1
                    bar.update(1)
                    bar.set_postfix(loss=f"{step[0]:.3f}", phase=phase.name,
                                    shares="/".join(f"{100 * s:.0f}" for s in step[2]))
                    if done % t["log_interval"] == 0 or done == t["iters"]:
                        log.write(_train_record(done, phase, self.optimizer, window))
                        window = []
                    if done % t["checkpoint_interval"] == 0 or done == t["iters"]:
                        self._save_latest(done)
                    if t["eval_interval"] and done % t["eval_interval"] == 0 and done != t["iters"]:
                        _evaluate_and_log(model, val_dataset, self.cfg, info, log, done, self.progress)
                        set_trainable(model, phase, t["freeze_bn"])
                    if stop.requested:
                        if self.saved != done:
                            self._save_latest(done)
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            resume = ("--resume starts again from the beginning (no checkpoint yet)" if self.saved is None
                      else f"continue with --resume (from the checkpoint of iteration {self.saved})")
            raise Interrupted(f"interrupted at iteration {done} of {t['iters']}; {resume}") from None
        finally:
            bar.close()

    def _save_latest(self, done: int) -> None:
        """Write latest.pth for ``done`` iterations (process 0 writes; every process records it)."""
        if self.info.is_main:
            save_checkpoint(self.latest, checkpoint_state(self.model, self.optimizer, self.scheduler, done,
                                                          self.cfg, self.scaler))
        self.saved = done

    def finish(self, val_dataset, log: JsonlLog, evaluates: bool) -> TrainSummary:
        """Write what the end of a run writes and is not there yet: final.pth, and the final
        evaluation (done once its record is in the log, which is written after eval.json)."""
        t, info, work_dir = self.cfg["train"], self.info, self.cfg["work_dir"]
        broadcast_buffers(self.model, info)
        write_final = not os.path.isfile(self.final)
        evaluate_now = evaluates and not log.has("eval", t["iters"])
        evaluate_now = bool(all_reduce_sum(torch.tensor([float(evaluate_now)]), info).item())  # rank 0 decides
        missing = [name for name, needed in ((FINAL, write_final), (EVAL, evaluate_now)) if needed]
        try:
            if info.is_main and write_final:
                save_checkpoint(self.final, {"model": self.model.state_dict(), "iteration": t["iters"],
                                             "config": self.cfg})
            evaluation = None
            if evaluate_now:
                evaluation = _evaluate_and_log(self.model, val_dataset, self.cfg, info, log, t["iters"], self.progress)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted after the last iteration, while writing {', '.join(missing)}; "
                              f"--resume completes the run") from None
        return TrainSummary(self.model, work_dir, t["iters"], self.final, evaluation, completed=missing)


def _step(net, optimizer, scheduler, scaler, images, labels, phase: Phase, execution: str, info: DistInfo,
          iteration: int, saved: Optional[str], amp: Optional[torch.dtype] = None
          ) -> Tuple[float, torch.Tensor, Tuple[float, float, float], float]:
    """One optimisation step; returns (loss, per-stage losses, stage shares, seconds). ``amp``:
    the forward pass and the loss under autocast in this dtype; with float16 the gradient
    scaler skips a step whose gradients overflowed (and lowers its scale) instead of stopping."""
    tic = time.perf_counter()
    with torch.autocast(images.device.type, dtype=amp or torch.float32, enabled=amp is not None):
        result = net(images, rho=phase.rho, execution=execution, labels=False)  # the loss reads the grid only
        loss, stage_losses = cascade_loss(result, labels, phase.loss_weights)
    _check_finite(loss.detach(), f"the loss ({float(loss.detach()):.4g})", iteration, info, saved)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # the gradient norm of the real gradients
    trainable = [p for p in optimizer.param_groups[0]["params"] if p.grad is not None]
    grad_norm = torch.nn.utils.clip_grad_norm_(trainable, float("inf")) if trainable else loss.new_zeros(())
    if not scaler.is_enabled():
        _check_finite(grad_norm, "the gradient norm", iteration, info, saved)
    scaler.step(optimizer)
    scaler.update()
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
