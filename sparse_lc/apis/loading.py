"""Getting a ready model: from a config, a checkpoint, both, or the bundled default."""
from __future__ import annotations

import os
import warnings
from typing import Any, Dict, Iterable, Optional, Tuple

import numpy as np

from ..builder import build_model
from ..cascade import LayerCascade
from ..checkpoint import CheckpointError, load_checkpoint, load_model_weights
from ..config import config_from_dict, load_config
from ..data import DATASETS
from ..data.palettes import voc_palette
from ..errors import CalibrationWarning
from ..evaluation import apply_operating_point, find_operating_point

__all__ = ["BUNDLED_CHECKPOINT", "SAMPLES_DIR", "CalibrationWarning", "class_names_and_palette", "load_model"]

ASSETS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets")
BUNDLED_CHECKPOINT = os.path.join(ASSETS, "lc_synthetic_small.pth")
SAMPLES_DIR = os.path.join(ASSETS, "samples")


def load_model(config: Optional[str] = None, checkpoint: Optional[str] = None,
               overrides: Iterable[str] = (), calibrated: bool = True) -> Tuple[LayerCascade, Dict[str, Any]]:
    """The model and its config.

    * neither: the bundled default (a small cascade trained on the synthetic dataset);
    * a checkpoint only: its weights, and the config stored in it by ``sparse-lc train``. Its
      ``custom_imports`` are not imported because the checkpoint names them: unless this
      process has imported them already, a CheckpointError says how to allow them (a config of
      yours, or ``overrides=["custom_imports=[...]"]``);
    * a config only: that model, untrained (enough to profile MACs);
    * both: the config's model with the checkpoint's weights.

    With ``calibrated``, the operating point that ``sparse-lc calibrate`` saved beside the
    checkpoint (temperatures and thresholds) is applied and kept in ``model.operating_point``;
    one that does not fit the weights or the model is skipped with a :class:`CalibrationWarning`.
    """
    if config is None and checkpoint is None:
        checkpoint = BUNDLED_CHECKPOINT
    if config is not None:
        cfg = load_config(config, overrides)
    data = load_checkpoint(checkpoint) if checkpoint is not None else None  # read once
    if config is None:
        stored = data.get("config")
        if not isinstance(stored, dict):
            raise CheckpointError(f"{checkpoint}: holds no config; pass --config too")
        cfg = config_from_dict(stored, source=checkpoint, overrides=overrides)
    cfg["model"]["pretrained"] = None  # the checkpoint, if any, holds every weight
    model = build_model(cfg["model"])
    if checkpoint is not None:
        load_model_weights(model, checkpoint, data)
        if calibrated:
            _apply_calibration(model, checkpoint)
    return model.eval(), cfg


def _apply_calibration(model: LayerCascade, checkpoint: str) -> None:
    try:
        point = find_operating_point(model, checkpoint)
    except CheckpointError as e:
        warnings.warn(f"{e}; not applied", CalibrationWarning, stacklevel=3)
        return
    if point is not None:
        apply_operating_point(model, point)
        model.operating_point = point


def class_names_and_palette(cfg: Dict[str, Any]) -> Tuple[Tuple[str, ...], np.ndarray]:
    """Class names and RGB palette ``[K, 3]`` for the dataset a config names (VOC colours pad
    out a palette shorter than ``model.num_classes``)."""
    data, k = cfg["data"], cfg["model"]["num_classes"]
    info = DATASETS.info(data["type"]) if data["type"] in DATASETS else {}
    names = info.get("classes") or data["classes"] or ()
    palette = info.get("palette") if info.get("palette") is not None else data["palette"]
    names = tuple(names) + tuple(f"class {i}" for i in range(len(names or ()), k))
    fallback = voc_palette(max(k, 1))
    palette = np.asarray(palette, np.uint8) if palette is not None and len(palette) else fallback[:0]
    return names[:k], np.concatenate([palette, fallback[len(palette):k]])[:k]
