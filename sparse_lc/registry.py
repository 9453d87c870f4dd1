"""One generic registry: things built by name (backbones, datasets, train modes), timm's habit.

Each component keeps its own instance (``BACKBONES`` in :mod:`sparse_lc.backbones`,
``DATASETS`` in :mod:`sparse_lc.data`, ``TRAIN_MODES`` in :mod:`sparse_lc.training`)::

    BACKBONES = Registry("backbone")

    @BACKBONES.register("resnet18", pixel_mean=..., weights_layout="torchvision")
    def resnet18(**kwargs): ...

    BACKBONES.get("resnet18")     # the factory
    BACKBONES.info("resnet18")    # what it was registered with (keyword arguments)

An unknown name raises :class:`~sparse_lc.errors.UnknownNameError` with close matches.
"""
from __future__ import annotations

import difflib
from typing import Any, Callable, Dict, Generic, List, Optional, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind, each with free-form metadata (``info``)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, T] = {}
        self._info: Dict[str, Dict[str, Any]] = {}

    def register(self, name: str, obj: Optional[T] = None, **info: Any) -> Callable[[T], T]:
        """Register ``obj`` under ``name`` (or, without ``obj``, decorate it). ``info`` is
        kept beside it. A name registered twice is an error."""
        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            self._info[name] = dict(info)
            return entry
        if obj is not None:
            add(obj)
            return lambda entry: entry
        return add

    def names(self) -> List[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> T:
        """The entry of ``name``; UnknownNameError (with close matches) if there is none."""
        if name not in self._entries:
            raise UnknownNameError(self.unknown(name))
        return self._entries[name]

    def info(self, name: str) -> Dict[str, Any]:
        """The keyword arguments ``name`` was registered with."""
        self.get(name)
        return self._info[name]

    def unknown(self, name: object) -> str:
        """The message for an unknown ``name``: close matches first, then every name."""
        close = difflib.get_close_matches(str(name), self._entries, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; available: {', '.join(self.names())}"
