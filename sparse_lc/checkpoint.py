"""Reading weight files safely (``torch.load(weights_only=True)``), with one-line errors."""
from __future__ import annotations

import os
from typing import Dict

import torch


class CheckpointError(ValueError):
    """A weight file that cannot be used; the message names the file and the problem."""


def load_state_dict_file(path: str) -> Dict[str, torch.Tensor]:
    """Load a state_dict from ``path`` on the CPU, without running pickled code.

    Accepts a bare state_dict or a checkpoint dict holding one under ``state_dict`` or ``model``.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such weight file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load fails in many ways on a foreign file; all mean the same
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a loadable weight file ({reason})") from None
    for key in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: expected a state_dict (a mapping of names to tensors)")
    return data
