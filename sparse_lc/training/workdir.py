"""A training run's folder: its checkpoints, its log, and the rules for starting or resuming.

* A fresh run refuses a work_dir that already holds a run (any of ``latest.pth``,
  ``final.pth``, ``log.jsonl``, ``eval.json``): nothing is lost by accident. ``--resume``
  continues it; ``--resume`` with no checkpoint yet starts fresh (a requeued job that died
  before its first checkpoint).
* One run at a time: a run holds an OS lock on ``work_dir/.lock`` (``fcntl.flock``) while it
  works; a second run into the same folder stops at once. The OS releases the lock when the
  process ends, however it ends.
* Resuming checks that the settings that shape the run are those of the checkpoint, and
  names the ones that differ. A run resumed after its last iteration completes what is missing
  (``final.pth``, the evaluation).
* The log is cut back to the checkpoint's iteration on resume, so no iteration is logged twice.
"""
from __future__ import annotations

import glob
import json
import os
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional

import torch

from ..checkpoint import CheckpointError, atomic_write, load_checkpoint
from ..errors import UsageError

try:
    import fcntl
except ImportError:  # not on Windows: runs are not locked there
    fcntl = None

LATEST, FINAL, LOG, CONFIG, EVAL, LOCK = "latest.pth", "final.pth", "log.jsonl", "config.yaml", "eval.json", ".lock"
RUN_FILES = (LATEST, FINAL, LOG, EVAL)  # a folder with any of these holds a run

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


def held_run_files(work_dir: str) -> List[str]:
    """The files of a run that ``work_dir`` holds (see :data:`RUN_FILES`)."""
    return [name for name in RUN_FILES if os.path.exists(os.path.join(work_dir, name))]


def check_work_dir(work_dir: str, resume: bool) -> None:
    """Refuse a fresh run into a folder that holds a run, or a resume that cannot continue one."""
    held = held_run_files(work_dir)
    if os.path.exists(work_dir) and not os.path.isdir(work_dir):
        raise UsageError(f"work_dir {work_dir}: exists and is not a folder")
    if not resume and held:
        raise UsageError(f"work_dir {work_dir} already holds a run ({', '.join(held)}): pass --resume to continue "
                         f"it, or choose another --work-dir")
    if resume and LATEST not in held and (FINAL in held or EVAL in held):
        raise UsageError(f"work_dir {work_dir} holds {', '.join(held)} but no {LATEST} to resume from: choose "
                         f"another --work-dir")


def resume_checkpoint(work_dir: str, resume: bool, cfg: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The checkpoint state to resume from (read once, here), or None for a fresh start;
    raises on a conflict (see :func:`check_work_dir`) or on settings that differ."""
    check_work_dir(work_dir, resume)
    latest = os.path.join(work_dir, LATEST)
    if not os.path.isfile(latest):
        if resume:
            print(f"sparse-lc train: no {latest} yet: starting from scratch")
        return None
    state = load_checkpoint(latest)
    stored = state.get("config")
    differ = config_differences(stored, cfg) if isinstance(stored, dict) else []
    if differ:
        raise CheckpointError(f"{latest}: cannot resume with different settings: {', '.join(differ)}")
    return state


@contextmanager
def work_dir_lock(work_dir: str, enabled: bool = True) -> Iterator[None]:
    """Hold ``work_dir/.lock`` (creating the folder) for the block; UsageError at once if another
    process holds it. The file keeps the holder's process id, for the message."""
    if not enabled or fcntl is None:
        yield
        return
    try:
        os.makedirs(work_dir, exist_ok=True)
        fd = os.open(os.path.join(work_dir, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise UsageError(f"work_dir {work_dir}: cannot create it or its lock file ({e.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise UsageError(f"work_dir {work_dir} is in use by another run (process {holder}): wait for it to end, "
                         f"or choose another --work-dir") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


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
        kept = [r for r in self.records() if r.get("iter", 0) <= keep_until] if keep_until is not None else []
        text = "".join(json.dumps(r) + "\n" for r in kept)
        atomic_write(path, lambda f: f.write(text.encode()))

    def records(self) -> List[Dict[str, Any]]:
        """The records so far; a line cut short by a killed process is left out."""
        if not os.path.isfile(self.path):
            return []
        records = []
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
        return records

    def has(self, kind: str, iteration: int) -> bool:
        """Whether the log holds a record of ``kind`` ("train", "eval") at ``iteration`` (False
        off the main process, which keeps no log)."""
        return self.enabled and any(r.get("type") == kind and r.get("iter") == iteration for r in self.records())

    def write(self, record: Dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


def checkpoint_state(model, optimizer, scheduler, iteration: int, cfg: Dict[str, Any], scaler=None) -> Dict[str, Any]:
    """Everything a resumed run needs: weights, optimizer and scheduler state, the gradient
    scaler's (mixed precision in float16), RNG, config."""
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "iteration": iteration, "rng": rng, "config": cfg}
    if scaler is not None and scaler.is_enabled():
        state["scaler"] = scaler.state_dict()
    return state


def restore(path: str, state: Dict[str, Any], model, optimizer, scheduler, scaler=None) -> int:
    """Load a :func:`checkpoint_state` (read from ``path``) into the run; returns its iteration."""
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and scaler.is_enabled():
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        return int(state["iteration"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot resume from it ({str(e).splitlines()[0][:200]})") from None
