"""What trains when: phases, the train modes that lay them out, the optimizer and its schedule.

A train mode (``train.mode``) is a registered function ``(cfg) -> [Phase, ...]``:

* ``lc`` (the paper): ``warmup_iters`` of deep supervision (rho = 1: every stage learns on
  every pixel), then cascade fine-tuning at ``model.rho``: stage 1's loss covers all pixels,
  stage 2's the pixels stage 1 left hard, stage 3's those still hard.
* ``dense``: deep supervision for the whole run; test it at rho = 1 (the dense model).
* ``mc`` (model cascade): three equal phases; phase k trains only stage k (earlier stages
  frozen, batch norm included) on the pixels it receives at ``model.rho``.

The learning rate follows DeepLab's poly decay over each phase's ``poly_span``: the whole run
for ``lc`` and ``dense``, each phase for ``mc`` (whose phases train separate stages).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

import torch

from ..cascade import LayerCascade
from ..errors import ConfigError, UnknownNameError
from ..registry import Registry
from ..rho import Rho


@dataclass(frozen=True)
class Phase:
    name: str
    start: int                                # first iteration (0-based)
    end: int                                  # one past the last
    rho: Rho
    stages: Tuple[int, ...]                   # stages whose parameters train
    loss_weights: Tuple[float, float, float]
    poly_span: Tuple[int, int]                # iterations over which the learning rate decays to 0


#: ``train.mode`` -> ``(cfg) -> [Phase, ...]``
TRAIN_MODES: Registry[Callable[[Dict[str, Any]], List[Phase]]] = Registry("train mode")


def register_train_mode(name: str, description: str) -> Callable:
    """Decorator: register ``(cfg) -> [Phase, ...]`` as the train mode ``name``."""
    return TRAIN_MODES.register(name, description=description)


@register_train_mode("lc", "the paper: deep supervision (rho = 1) for warmup_iters, then cascade fine-tuning")
def lc_phases(cfg: Dict[str, Any]) -> List[Phase]:
    t = cfg["train"]
    iters, weights, warmup = t["iters"], tuple(t["stage_loss_weights"]), min(t["warmup_iters"], t["iters"])
    return [Phase("deep-supervision", 0, warmup, 1.0, (1, 2, 3), weights, (0, iters)),
            Phase("cascade", warmup, iters, cfg["model"]["rho"], (1, 2, 3), weights, (0, iters))]


@register_train_mode("dense", "deep supervision for the whole run (every stage on every pixel)")
def dense_phases(cfg: Dict[str, Any]) -> List[Phase]:
    t = cfg["train"]
    return [Phase("dense", 0, t["iters"], 1.0, (1, 2, 3), tuple(t["stage_loss_weights"]), (0, t["iters"]))]


@register_train_mode("mc", "model cascade: three phases, each training one stage on the pixels it receives")
def mc_phases(cfg: Dict[str, Any]) -> List[Phase]:
    iters, rho = cfg["train"]["iters"], cfg["model"]["rho"]
    cuts = [round(iters * k / 3) for k in range(4)]
    one_hot = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    return [Phase(f"mc-stage{k + 1}", cuts[k], cuts[k + 1], 0.0 if k == 0 else rho, (k + 1,), one_hot[k],
                  (cuts[k], cuts[k + 1])) for k in range(3)]


def build_phases(cfg: Dict[str, Any]) -> List[Phase]:
    """The non-empty phases of ``train.mode``; an unknown mode is a ConfigError with close matches."""
    try:
        layout = TRAIN_MODES.get(cfg["train"]["mode"])
    except UnknownNameError as e:
        raise ConfigError(f"train.mode: {e}") from None
    return [p for p in layout(cfg) if p.end > p.start]


def phase_at(phases: List[Phase], iteration: int) -> Phase:
    return next(p for p in phases if p.start <= iteration < p.end)


def build_optimizer(model: torch.nn.Module, t: Dict[str, Any]) -> torch.optim.Optimizer:
    if t["optimizer"] == "sgd":
        return torch.optim.SGD(model.parameters(), lr=t["lr"], momentum=t["momentum"], weight_decay=t["weight_decay"])
    if t["optimizer"] == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=t["lr"], weight_decay=t["weight_decay"])
    raise ConfigError(f"train.optimizer must be sgd or adamw, got {t['optimizer']!r}")


def poly_schedule(phases: List[Phase], cfg: Dict[str, Any]) -> Callable[[int], float]:
    """LR factor of an iteration: DeepLab's poly decay over its phase's ``poly_span``."""
    t = cfg["train"]

    def factor(iteration: int) -> float:
        start, end = phase_at(phases, min(iteration, t["iters"] - 1)).poly_span
        return max(1.0 - (iteration - start) / (end - start), 0.0) ** t["poly_power"]
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
