"""Folding eval-mode batch norm into the conv before it, for faster inference."""
from __future__ import annotations

import copy

import torch
from torch import nn


def fold_bn_into_conv(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """``bn(conv(x)) == conv'(x)``: scale the conv's output channels, give it a bias (in place)."""
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # [C_out]
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        conv.bias = nn.Parameter(bn.bias + (bias - bn.running_mean) * scale)


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """An inference copy of ``model`` in which every BatchNorm that directly follows a conv (in
    its parent's definition order, as in every block of this library) is folded into that conv
    and replaced by ``nn.Identity``. The copy is in eval mode; ``model`` is unchanged.

    Both execution paths use the folded weights, so sparse and dense runs stay comparable.
    """
    fused = copy.deepcopy(model).eval()
    for parent in fused.modules():
        children = list(parent.named_children())
        for (_, first), (name, second) in zip(children, children[1:]):
            if (isinstance(first, nn.Conv2d) and isinstance(second, nn.modules.batchnorm._BatchNorm)
                    and second.track_running_stats and second.num_features == first.out_channels):
                fold_bn_into_conv(first, second)
                setattr(parent, name, nn.Identity())
    return fused
