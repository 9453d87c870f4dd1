"""Build a :class:`LayerCascade` from the ``model`` section of a config."""
from __future__ import annotations

from typing import Any, Dict

from .backbones import ResNetOS8, build_backbone, load_torchvision_resnet
from .cascade import LayerCascade
from .checkpoint import CheckpointError, load_state_dict_file


def build_model(model_cfg: Dict[str, Any]) -> LayerCascade:
    """``model_cfg`` is ``cfg["model"]`` (see :data:`sparse_lc.config.DEFAULTS`).

    ``pretrained``, when set, is a local torchvision ResNet state_dict loaded into the backbone
    (the heads stay randomly initialised). Nothing is ever downloaded.
    """
    backbone = build_backbone(model_cfg["backbone"], **model_cfg.get("backbone_args", {}))
    pretrained = model_cfg.get("pretrained")
    if pretrained:
        if not isinstance(backbone, ResNetOS8):
            raise ValueError(f"model.pretrained: backbone {model_cfg['backbone']!r} takes no "
                             "torchvision weights")
        state = load_state_dict_file(pretrained)
        try:
            load_torchvision_resnet(backbone, state)
        except ValueError as e:
            raise CheckpointError(f"{pretrained}: {e}") from None
    return LayerCascade(backbone, num_classes=model_cfg["num_classes"],
                        head_channels=model_cfg["head_channels"], rho=model_cfg["rho"],
                        halo=model_cfg["halo"], pixel_mean=model_cfg["pixel_mean"],
                        pixel_std=model_cfg["pixel_std"])
