"""Checkpoints: written atomically, read safely (``torch.load(weights_only=True)``), one-line errors."""
from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Any, BinaryIO, Callable, Dict, Optional

import torch

from .errors import CheckpointError

__all__ = ["CheckpointError", "atomic_write", "file_sha256", "load_checkpoint", "load_model_weights",
           "load_state_dict_file", "save_checkpoint", "state_dict_mismatch"]


def save_checkpoint(path: str, state: Dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: torch.save(state, f))


def atomic_write(path: str, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on a temporary file in the folder of ``path``, flush it to disk, then
    rename it over ``path``. A crash leaves the old file or the new one, never half of one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_folder(folder)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file's bytes (ties a calibration to the exact weights it was made for)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Load a checkpoint dict on the CPU without running pickled code."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load fails in many ways on a foreign file; all mean the same
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a loadable weight file ({reason[:200]})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict, got {type(data).__name__}")
    return data


def load_state_dict_file(path: str, data: Optional[Dict[str, Any]] = None) -> Dict[str, torch.Tensor]:
    """A state_dict from ``path``: a bare one, or the one a checkpoint holds under ``model``
    (sparse_lc's own) or ``state_dict`` (a common convention). ``data``: the file's contents,
    if the caller has loaded them already (:func:`load_checkpoint`)."""
    data = load_checkpoint(path) if data is None else data
    for key in ("model", "state_dict"):
        if isinstance(data.get(key), dict):
            data = data[key]
    if not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: expected a state_dict (a mapping of names to tensors)")
    return data


def load_model_weights(model: torch.nn.Module, path: str, data: Optional[Dict[str, Any]] = None) -> None:
    """Load a sparse_lc checkpoint (or bare state_dict) into ``model``; mismatches name the file.
    ``data``: the file's contents, if already loaded."""
    state = load_state_dict_file(path, data)
    mismatch = state_dict_mismatch(model.state_dict(), state)
    if mismatch:
        raise CheckpointError(f"{path}: does not match the model of this config ({mismatch})")
    model.load_state_dict(state)


def state_dict_mismatch(own: Dict[str, torch.Tensor], other: Dict[str, torch.Tensor]) -> str:
    """'' when ``other`` has exactly the keys and shapes of ``own``, else what differs."""
    missing = sorted(set(own) - set(other))
    unexpected = sorted(set(other) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(other) if own[k].shape != other[k].shape)
    if not (missing or unexpected or wrong_shape):
        return ""
    return (f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong_shape[:3]}; "
            f"{len(missing)}/{len(unexpected)}/{len(wrong_shape)} in all")
