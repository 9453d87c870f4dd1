"""Switching a model to eval mode for a while, and back, even when an exception escapes."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, TypeVar

from torch import nn

M = TypeVar("M", bound=nn.Module)


@contextmanager
def eval_mode(model: M) -> Iterator[M]:
    """``with eval_mode(model):`` runs the block with ``model`` in eval mode, then gives every
    submodule back the mode it had (a stage frozen in eval mode inside a training model stays
    frozen), also when the block raises."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training
