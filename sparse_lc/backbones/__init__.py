"""Backbones split into three stages, built by name from a registry."""
from . import resnet, tiny  # noqa: F401  (registers the backbones)
from .base import CascadeBackbone
from .registry import build_backbone, list_backbones, register_backbone
from .resnet import ResNetOS8, load_torchvision_resnet

__all__ = ["CascadeBackbone", "ResNetOS8", "build_backbone", "list_backbones",
           "load_torchvision_resnet", "register_backbone"]
