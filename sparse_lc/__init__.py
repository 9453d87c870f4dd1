"""sparse_lc: the deep layer cascade (Li et al., CVPR 2017) with spconv submanifold stages.

Quick start::

    import cv2, sparse_lc
    model, cfg = sparse_lc.load_model()                 # the bundled model (or config=, checkpoint=)
    result = model.predict(cv2.imread("photo.jpg"), rho=0.9)
    result.labels, result.stage_map, result.stage_shares
"""
__version__ = "0.1.0"

from .backbones import CascadeBackbone, build_backbone, list_backbones, register_backbone
from .builder import build_model
from .cascade import CascadeResult, LayerCascade
from .config import ConfigError, load_config
from .loading import load_model

__all__ = ["CascadeBackbone", "CascadeResult", "ConfigError", "LayerCascade", "__version__",
           "build_backbone", "build_model", "list_backbones", "load_config", "load_model", "register_backbone"]
