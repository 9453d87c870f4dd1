"""Backbones split into three stages, built by name from a registry."""
from . import convnext, inception_resnet_v2, mobilenetv2, resnet, tiny  # noqa: F401  (registers the backbones)
from .base import BackboneInfo, CascadeBackbone, backbone_info, build_backbone, list_backbones, register_backbone
from .convnext import ConvNeXtOS8
from .inception_resnet_v2 import InceptionResNetV2OS8
from .mobilenetv2 import MobileNetV2OS8
from .resnet import ResNetOS8, load_torchvision_resnet

__all__ = ["BackboneInfo", "CascadeBackbone", "ConvNeXtOS8", "InceptionResNetV2OS8", "MobileNetV2OS8", "ResNetOS8",
           "backbone_info", "build_backbone", "list_backbones", "load_torchvision_resnet", "register_backbone"]
