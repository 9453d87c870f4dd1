"""Shared helpers: small cascades with random weights and non-trivial batch-norm statistics."""
from __future__ import annotations

import pytest
import torch

from sparse_lc import LayerCascade, build_backbone


def randomize(model: torch.nn.Module, seed: int, logit_scale: float = 30.0) -> torch.nn.Module:
    """Random weights everywhere, random BN running stats (so eval-mode BN is not the identity),
    and classifiers scaled so that top softmax scores spread over (1/K, 1): every rho in
    (0.5, 0.99) then splits the pixels into easy and hard ones."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (p[0].numel() ** -0.5 if p.dim() > 1 else 0.1))
            if name.endswith("classifier.weight"):
                p.mul_(logit_scale)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.add_(1.0)
    return model


# Inception-ResNet-v2 with every width / 16 and 1 / 2 / 2 blocks: the real topology (all block
# types, both reductions, the no-ReLU block8), fast enough for the equivalence tests.
IRNV2_SMALL = dict(backbone="inception_resnet_v2", width=1 / 16, depths=(1, 2, 2))


def make_cascade(backbone: str = "tiny", dilations=(2, 4), seed: int = 0, halo: int = 0,
                 num_classes: int = 5, head_channels: int = 16, **backbone_args) -> LayerCascade:
    torch.manual_seed(seed)
    net = build_backbone(backbone, dilations=tuple(dilations), **backbone_args)
    model = LayerCascade(net, num_classes=num_classes, head_channels=head_channels, halo=halo)
    return randomize(model, seed)


def random_images(batch: int = 3, height: int = 48, width: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth random images (random noise blurred a little), normalised floats [B, 3, H, W]."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch, 3, height // 4 + 1, width // 4 + 1, generator=gen)
    smooth = torch.nn.functional.interpolate(noise, size=(height, width), mode="bilinear", align_corners=False)
    return smooth + 0.3 * torch.randn(batch, 3, height, width, generator=gen)


@pytest.fixture
def tiny_model() -> LayerCascade:
    return make_cascade().eval()
