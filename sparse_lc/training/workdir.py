"""A training run's folder: its checkpoints, its log, and the rules for starting or resuming.

* A fresh run refuses a work_dir that already holds a run (``latest.pth``): nothing is lost
  by accident. ``--resume`` continues it; ``--resume`` with no checkpoint yet starts fresh
  (a requeued job that died before its first checkpoint).
* Resuming checks that the settings that shape the run are those of the checkpoint, and
  names the ones that differ.
* The log is cut back to the checkpoint's iteration on resume, so no iteration is logged twice.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Any, Dict, List, Optional

import torch

from ..checkpoint import CheckpointError, load_checkpoint

LATEST, FINAL, LOG, CONFIG = "latest.pth", "final.pth", "log.jsonl", "config.yaml"

# settings a resumed run must share with its checkpoint (dotted keys; a section means all of it)
RESUME_KEYS = ("model", "data.type", "data.root", "train.mode", "train.optimizer", "train.batch_size",
               "train.crop_size", "train.seed", "train.warmup_iters")


def _lookup(cfg: Dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = cfg.get(part) if isinstance(cfg, dict) else None
    return cfg


def config_differences(old: Dict[str, Any], new: Dict[str, Any], keys=RESUME_KEYS) -> List[str]:
    """The keys (among ``keys``, sections expanded) whose values differ."""
    differ = []
    for key in keys:
        a, b = _lookup(old, key), _lookup(new, key)
        if isinstance(a, dict) and isinstance(b, dict):
            differ += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            differ.append(key)
    return differ


def resume_checkpoint(work_dir: str, resume: bool, cfg: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The checkpoint state to resume from (read once, here), or None for a fresh start;
    raises on a conflict."""
    latest = os.path.join(work_dir, LATEST)
    if not os.path.isfile(latest):
        if resume:
            print(f"sparse-lc train: no {latest} yet: starting from scratch")
        return None
    if not resume:
        raise ValueError(f"{latest}: this work_dir already holds a run; pass --resume to continue it "
                         f"or choose another --work-dir")
    state = load_checkpoint(latest)
    stored = state.get("config")
    differ = config_differences(stored, cfg) if isinstance(stored, dict) else []
    if differ:
        raise CheckpointError(f"{latest}: cannot resume with different settings: {', '.join(differ)}")
    return state


def remove_stale_temporaries(work_dir: str) -> None:
    """Delete half-written checkpoint files left by a process that was killed mid-save."""
    for path in glob.glob(os.path.join(work_dir, "*.pth.*.tmp")):
        os.remove(path)


class JsonlLog:
    """Appends one JSON object per line (main process only)."""

    def __init__(self, path: str, enabled: bool, keep_until: Optional[int]):
        """``keep_until``: keep the records of iterations up to this one (resume), or start an
        empty log (None)."""
        self.path, self.enabled = path, enabled
        if not enabled:
            return
        kept = []
        if keep_until is not None and os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                kept = [line for line in f if line.strip() and json.loads(line).get("iter", 0) <= keep_until]
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(kept)

    def write(self, record: Dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


def checkpoint_state(model, optimizer, scheduler, iteration: int, cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Everything a resumed run needs: weights, optimizer and scheduler state, RNG, config."""
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "iteration": iteration, "rng": rng, "config": cfg}


def restore(path: str, state: Dict[str, Any], model, optimizer, scheduler) -> int:
    """Load a :func:`checkpoint_state` (read from ``path``) into the run; returns its iteration."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        return int(state["iteration"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot resume from it ({str(e).splitlines()[0][:200]})") from None
