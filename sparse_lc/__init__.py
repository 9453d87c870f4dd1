"""sparse_lc: the deep layer cascade (Li et al., CVPR 2017) with spconv submanifold stages.

Quick start::

    import sparse_lc
    model = sparse_lc.build_model(sparse_lc.load_config()["model"]).eval()
    result = model.predict(bgr_uint8_image, rho=0.9)   # result.labels, result.stage_map, ...
"""
__version__ = "0.1.0"

from .backbones import CascadeBackbone, build_backbone, list_backbones, register_backbone
from .builder import build_model
from .cascade import CascadeResult, LayerCascade
from .config import ConfigError, load_config

__all__ = ["CascadeBackbone", "CascadeResult", "ConfigError", "LayerCascade", "__version__",
           "build_backbone", "build_model", "list_backbones", "load_config", "register_backbone"]
