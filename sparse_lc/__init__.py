"""sparse_lc: the deep layer cascade (Li et al., CVPR 2017) with spconv submanifold stages.

Quick start::

    import cv2, sparse_lc
    model, cfg = sparse_lc.load_model()                 # the bundled model (or config=, checkpoint=)
    result = model.predict(cv2.imread("photo.jpg"), rho=0.9)
    result.labels, result.stage_map, result.stage_shares

Names are imported on first use, so ``import sparse_lc`` (and ``sparse-lc --help``) stays fast:
torch is loaded with the first model, spconv with the first sparse stage.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, List

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "CascadeBackbone": "sparse_lc.backbones", "build_backbone": "sparse_lc.backbones",
    "list_backbones": "sparse_lc.backbones", "register_backbone": "sparse_lc.backbones",
    "CascadeResult": "sparse_lc.result", "LayerCascade": "sparse_lc.cascade",
    "build_model": "sparse_lc.builder",
    "ConfigError": "sparse_lc.errors", "ModelError": "sparse_lc.errors", "load_config": "sparse_lc.config",
    "load_model": "sparse_lc.apis",
}
_SUBMODULES = ("analysis", "apis", "backbones", "builder", "cascade", "checkpoint", "cli", "config", "data",
               "errors", "evaluation", "layers", "ops", "registry", "testing", "training", "utils", "visualization")

__all__ = ["CascadeBackbone", "CascadeResult", "ConfigError", "LayerCascade", "ModelError", "__version__",
           "build_backbone", "build_model", "list_backbones", "load_config", "load_model", "register_backbone"]

if TYPE_CHECKING:
    from .apis import load_model
    from .backbones import CascadeBackbone, build_backbone, list_backbones, register_backbone
    from .builder import build_model
    from .cascade import LayerCascade
    from .config import load_config
    from .errors import ConfigError, ModelError
    from .result import CascadeResult


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'sparse_lc' has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted({*globals(), *_EXPORTS, *_SUBMODULES})
