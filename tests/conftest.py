"""Shared helpers: small cascades with random weights and non-trivial batch-norm statistics."""
from __future__ import annotations

import os
import tempfile

import pytest

from sparse_lc import LayerCascade, build_backbone
from sparse_lc.testing import random_images, randomize_weights

__all__ = ["CONVNEXT_SMALL", "IRNV2_SMALL", "MOBILENETV2_SMALL", "make_cascade", "random_images", "randomize_weights"]

# the data check's cache of valid files goes to a folder of this test session, not the user's ~/.cache
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="sparse_lc_test_cache_")

# Inception-ResNet-v2 with every width / 16 and 1 / 2 / 2 blocks: the real topology (all block
# types, both reductions, the no-ReLU block8), fast enough for the equivalence tests.
IRNV2_SMALL = dict(backbone="inception_resnet_v2", width=1 / 16, depths=(1, 2, 2))
# ConvNeXt and MobileNetV2 at their registered small sizes (every block type, every dilation)
CONVNEXT_SMALL = dict(backbone="convnext_tiny", dims=(16, 24, 32, 40), depths=(1, 1, 2, 1))
MOBILENETV2_SMALL = dict(backbone="mobilenet_v2", width=0.25, depths=(1, 1, 1, 2, 1, 2, 1))


def make_cascade(backbone: str = "tiny", dilations=(2, 4), seed: int = 0, halo: int = 0,
                 num_classes: int = 5, head_channels: int = 16, **backbone_args) -> LayerCascade:
    net = build_backbone(backbone, dilations=tuple(dilations), **backbone_args)
    model = LayerCascade(net, num_classes=num_classes, head_channels=head_channels, halo=halo)
    return randomize_weights(model, seed)


@pytest.fixture
def tiny_model() -> LayerCascade:
    return make_cascade().eval()
