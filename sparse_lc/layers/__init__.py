"""Blocks and heads, each defined once and runnable on any feature container."""
from .blocks import BasicBlock, Bottleneck, conv1x1, conv3x3, init_weights, make_layer, projection, run_blocks
from .convnext_blocks import ConvNeXtBlock, ConvNeXtStage, Mlp
from .fuse import fuse_conv_bn
from .heads import ASPPHead, SegHead
from .mobilenet_blocks import DepthwiseSeparableConv, InvertedResidual, SqueezeExcite, make_divisible

__all__ = ["ASPPHead", "BasicBlock", "Bottleneck", "ConvNeXtBlock", "ConvNeXtStage", "DepthwiseSeparableConv",
           "InvertedResidual", "Mlp", "SegHead", "SqueezeExcite", "conv1x1", "conv3x3", "fuse_conv_bn", "init_weights",
           "make_divisible", "make_layer", "projection", "run_blocks"]
