"""Backbones built by name (timm habit): ``build_backbone("resnet18", dilations=(2, 4))``."""
from __future__ import annotations

import difflib
from typing import Callable, Dict, List

from .base import CascadeBackbone

_BACKBONES: Dict[str, Callable[..., CascadeBackbone]] = {}


def register_backbone(name: str) -> Callable:
    """Decorator: register a factory ``(**kwargs) -> CascadeBackbone`` under ``name``."""
    def wrap(factory: Callable[..., CascadeBackbone]) -> Callable[..., CascadeBackbone]:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} is registered twice")
        _BACKBONES[name] = factory
        return factory
    return wrap


def list_backbones() -> List[str]:
    return sorted(_BACKBONES)


def build_backbone(name: str, **kwargs) -> CascadeBackbone:
    """Build a registered backbone; an unknown name raises ValueError listing close matches."""
    if name not in _BACKBONES:
        close = difflib.get_close_matches(name, _BACKBONES, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown backbone {name!r}{hint}; available: {', '.join(list_backbones())}")
    return _BACKBONES[name](**kwargs)
