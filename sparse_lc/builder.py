"""Build a :class:`LayerCascade` from the ``model`` section of a config."""
from __future__ import annotations

import logging
from typing import Any, Dict

from .backbones import build_backbone
from .backbones.base import backbone_args_problem
from .cascade import LayerCascade
from .checkpoint import CheckpointError, load_state_dict_file
from .errors import ConfigError

_log = logging.getLogger(__name__)


def build_model(model_cfg: Dict[str, Any]) -> LayerCascade:
    """``model_cfg`` is ``cfg["model"]`` (see :data:`sparse_lc.config.DEFAULTS`).

    ``pretrained``, when set, is a local file of ImageNet weights in the layout the backbone
    takes (:meth:`CascadeBackbone.load_pretrained`: torchvision's for ResNets, timm's for
    Inception-ResNet-v2), loaded into the backbone; the heads stay randomly initialised. Nothing
    is ever downloaded. The keys the backbone does not use are logged.
    """
    args = model_cfg.get("backbone_args", {})
    problem = backbone_args_problem(model_cfg["backbone"], args)
    if problem:  # a config from load_config has been checked already, with the file to name
        raise ConfigError(f"model.backbone_args: {problem[1]}")
    backbone = build_backbone(model_cfg["backbone"], **args)
    pretrained = model_cfg.get("pretrained")
    if pretrained:
        state = load_state_dict_file(pretrained)
        try:
            unused = backbone.load_pretrained(state)
        except ValueError as e:
            raise CheckpointError(f"{pretrained}: {e}") from None
        _log.info("%s: loaded into %s; %d keys not used (%s)", pretrained, model_cfg["backbone"],
                  len(unused), ", ".join(unused[:5]) + (", ..." if len(unused) > 5 else ""))
    return LayerCascade(backbone, num_classes=model_cfg["num_classes"],
                        head_channels=model_cfg["head_channels"], rho=model_cfg["rho"],
                        halo=model_cfg["halo"], pixel_mean=model_cfg["pixel_mean"],
                        pixel_std=model_cfg["pixel_std"])
