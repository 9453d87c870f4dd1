"""Residual blocks written once against the feature-container interface.

The same block runs on a plain dense map (stage 1, strides allowed), on a masked dense map (the
dense reference of stages 2-3) and on spconv sparse rows (stages 2-3), because it only calls
``x.conv / x.norm / x.relu / x.conv_norm_relu / x.add``. Module and parameter names follow torchvision's ResNet, so
its state_dicts load unchanged.
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from ..ops import Features, run_sequential


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 conv with 'same' padding for its dilation, no bias (a norm follows)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation,
                     dilation=dilation, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


def projection(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """The shortcut projection of a block that changes shape (torchvision's ``downsample``)."""
    return nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """ResNet-18/34 block: two 3x3 convs. ``[B, in, H, W] -> [B, planes, H/stride, W/stride]``."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: Optional[nn.Sequential] = None):
        super().__init__()
        self.conv1 = conv3x3(in_channels, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Features) -> Features:
        out = x.conv_norm_relu(self.conv1, self.bn1)
        out = out.conv(self.conv2).norm(self.bn2)
        identity = x if self.downsample is None else run_sequential(x, self.downsample)
        return out.add(identity).relu()


class Bottleneck(nn.Module):
    """ResNet-50+ block (v1.5: stride on the 3x3). ``[B, in, H, W] -> [B, 4 planes, H/s, W/s]``."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: Optional[nn.Sequential] = None):
        super().__init__()
        self.conv1 = conv1x1(in_channels, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = downsample

    def forward(self, x: Features) -> Features:
        out = x.conv_norm_relu(self.conv1, self.bn1)
        out = out.conv_norm_relu(self.conv2, self.bn2)
        out = out.conv(self.conv3).norm(self.bn3)
        identity = x if self.downsample is None else run_sequential(x, self.downsample)
        return out.add(identity).relu()


def make_layer(block: type, in_channels: int, planes: int, num_blocks: int, stride: int = 1,
               dilation: int = 1) -> nn.Sequential:
    """A torchvision-style ``layerN``: ``num_blocks`` blocks, the first one may stride/project.

    Every block of the layer uses the same ``dilation`` (as mmsegmentation and DeepLab do), so a
    sparse stage needs a single rulebook for all its 3x3 convs.
    """
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = projection(in_channels, out_channels, stride)
    blocks = [block(in_channels, planes, stride, dilation, downsample)]
    blocks += [block(out_channels, planes, 1, dilation) for _ in range(1, num_blocks)]
    return nn.Sequential(*blocks)


def run_blocks(x: Features, layer: nn.Sequential) -> Features:
    """Run the blocks of a layer in order on a feature container."""
    for block in layer:
        x = block(x)
    return x


def init_weights(module: nn.Module) -> None:
    """torchvision's ResNet initialisation: Kaiming-normal convs, unit BN scale, zero BN shift."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
