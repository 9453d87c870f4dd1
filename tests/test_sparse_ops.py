"""The operations beside spconv's convs, op by op: sparse rows == the masked dense reference.

Depthwise, grouped and even-kernel convs (through neighbour tables), layer / group / instance
norm, elementwise activations, layer scale, products and image-level pooling: outputs and
gradients in float64, rows of padding images that change no real row, statistics over each
image's active pixels (equal to the real op when every pixel is active), MACs, no host sync.
"""
from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sparse_lc.analysis.dispatch import count_host_syncs
from sparse_lc.layers import SqueezeExcite
from sparse_lc.ops import DenseFeatures, MacCounter, SparseFeatures

B, C, H, W = 3, 8, 11, 13


def _inputs(seed: int = 0, share: float = 0.45):
    """float64 features ``[B, C, H, W]`` and a mask whose first image has no active pixel."""
    gen = torch.Generator().manual_seed(seed)
    data = torch.randn(B, C, H, W, generator=gen, dtype=torch.float64)
    mask = torch.rand(B, H, W, generator=gen) < share
    mask[0] = False
    return data, mask


def _both(op, data, mask, pad: int = 0):
    """``op`` on the masked dense map and on sparse rows (with ``pad`` rows of padding), the
    outputs as ``[B, C, H, W]`` maps, and the gradients of a random projection of each with
    respect to the input and ``op``'s parameters."""
    results = []
    for sparse in (False, True):
        x = data.clone().requires_grad_(True)
        feats = SparseFeatures.from_dense(x, mask, "s") if sparse else DenseFeatures(x, mask)
        if sparse and pad:
            feats = feats.padded(feats.num_active + pad)
        out = op(feats).to_dense()
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
        params = [p for p in getattr(op, "parameters", lambda: [])()]
        grads = torch.autograd.grad((out * weights).sum(), [x, *params], allow_unused=True)
        results.append((out.detach(), grads))
    return results


def _assert_same(results, atol=1e-12):
    (dense, dense_grads), (sparse, sparse_grads) = results
    torch.testing.assert_close(sparse, dense, atol=atol, rtol=0)
    for g_sparse, g_dense in zip(sparse_grads, dense_grads):
        if g_dense is not None:
            torch.testing.assert_close(g_sparse, g_dense, atol=atol, rtol=0)


class _Op(nn.Module):
    """One module and the container operation that runs it, as a callable with parameters."""

    def __init__(self, module: nn.Module, run):
        super().__init__()
        self.module, self.run = module, run

    def forward(self, x):
        return self.run(x, self.module)


def _conv(conv: nn.Conv2d) -> _Op:
    return _Op(conv.double(), lambda x, m: x.conv(m))


@pytest.mark.parametrize("kernel, dilation, groups", list(itertools.product((3, 5, 7), (1, 2, 4), (C, C // 4))))
def test_depthwise_and_grouped_convs(kernel, dilation, groups):
    """Every odd kernel 3-7, dilation 1-4, groups C (depthwise) and C/4; with padding rows too."""
    data, mask = _inputs(kernel * 10 + dilation)
    op = _conv(nn.Conv2d(C, C, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation, groups=groups))
    _assert_same(_both(op, data, mask))
    _assert_same(_both(op, data, mask, pad=150))


@pytest.mark.parametrize("out_channels, groups, kernel", [(2 * C, C, 3), (12, 4, 1), (C, 2, (1, 5))])
def test_channel_multipliers_grouped_1x1_and_rectangular_windows(out_channels, groups, kernel):
    data, mask = _inputs(3)
    padding = "same" if isinstance(kernel, tuple) else kernel // 2
    _assert_same(_both(_conv(nn.Conv2d(C, out_channels, kernel, padding=padding, groups=groups)), data, mask))


@pytest.mark.parametrize("kernel, dilation", [(2, 1), (2, 2), (4, 1), (2, 3)])
def test_even_kernels_are_placed_as_torchs_same_padding(kernel, dilation):
    """ConvNeXt's 2x2 downsampling conv at stride 1: the extra offset after, as F.conv2d pads."""
    data, mask = _inputs(4)
    op = _conv(nn.Conv2d(C, 2 * C, kernel, padding="same", dilation=dilation))
    _assert_same(_both(op, data, mask))


NORMS = {
    "layer norm": lambda: nn.LayerNorm(C, eps=1e-6),
    "group norm": lambda: nn.GroupNorm(2, C),
    "group norm, one group": lambda: nn.GroupNorm(1, C),
    "instance norm": lambda: nn.InstanceNorm2d(C),
    "instance norm, affine": lambda: nn.InstanceNorm2d(C, affine=True),
}


@pytest.mark.parametrize("name", NORMS)
def test_norms_over_channels_and_over_each_images_active_pixels(name):
    norm = NORMS[name]().double()
    for p in norm.parameters():
        torch.nn.init.normal_(p)
    data, mask = _inputs(5)
    op = _Op(norm, lambda x, m: x.norm(m))
    _assert_same(_both(op, data, mask))
    _assert_same(_both(op, data, mask, pad=200))
    # every pixel active: the real op, as the plain dense path (warm-up) runs it
    everything = torch.ones(B, H, W, dtype=torch.bool)
    sparse = SparseFeatures.from_dense(data, everything, "s").norm(norm).to_dense()
    real = norm(data.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) if isinstance(norm, nn.LayerNorm) else norm(data)
    torch.testing.assert_close(sparse, real, atol=1e-12, rtol=0)
    torch.testing.assert_close(DenseFeatures(data).norm(norm).to_dense(), real, atol=1e-12, rtol=0)


def test_group_statistics_are_per_image():
    """An image's output does not change when another image's pixels do."""
    data, mask = _inputs(6)
    mask[0, 3:6, 2:9] = True
    norm = nn.GroupNorm(4, C).double()
    before = SparseFeatures.from_dense(data, mask, "s").norm(norm).to_dense()
    changed = data.clone()
    changed[1, :, :5] += torch.randn(C, 5, W, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    after = SparseFeatures.from_dense(changed, mask, "s").norm(norm).to_dense()
    assert torch.equal(before[[0, 2]], after[[0, 2]]) and not torch.allclose(before[1], after[1])


ACTIVATIONS = [nn.GELU(), nn.GELU(approximate="tanh"), nn.SiLU(), nn.ReLU6(), nn.Hardswish(), nn.Sigmoid(),
               nn.Tanh(), nn.Mish(), nn.LeakyReLU(0.2), nn.PReLU(C), nn.ReLU6(inplace=True), nn.Hardsigmoid()]


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda m: repr(m))
def test_elementwise_activations(activation):
    """``f(x) + x`` on the active pixels, zero elsewhere, whatever f(0) is (sigmoid(0) = 0.5); an
    in-place module does not change its input (which may still feed a residual)."""
    data, mask = _inputs(7)
    activation = activation.double()
    op = _Op(activation, lambda x, m: x.act(m).add(x))
    results = _both(op, data, mask)
    _assert_same(results)
    reference = copy.deepcopy(activation)
    reference.inplace = False
    expected = (reference(data) + data) * mask[:, None]
    torch.testing.assert_close(results[1][0], expected.detach(), atol=1e-12, rtol=0)


def test_layer_scale_products_and_squeeze_excitation():
    data, mask = _inputs(8)
    gamma = nn.Parameter(torch.randn(C, 1, 1, dtype=torch.float64))
    scale = _Op(nn.ParameterList([gamma]), lambda x, m: x.scale(m[0]))
    _assert_same(_both(scale, data, mask))
    product = _Op(nn.Conv2d(C, C, 1).double(), lambda x, m: x.mul(x.conv(m)))  # two feature sets, one active set
    _assert_same(_both(product, data, mask))
    se = _Op(SqueezeExcite(C, 3).double(), lambda x, m: m(x))
    _assert_same(_both(se, data, mask))
    _assert_same(_both(se, data, mask, pad=300))


def test_global_pool_is_each_images_mean_over_its_active_pixels():
    data, mask = _inputs(9)
    expected = torch.stack([data[b][:, mask[b]].mean(1) if mask[b].any() else data.new_zeros(C) for b in range(B)])
    for feats in (DenseFeatures(data, mask), SparseFeatures.from_dense(data, mask, "s")):
        torch.testing.assert_close(feats.global_pool().to_dense()[:B, :, 0, 0], expected, atol=1e-14, rtol=0)
    everything = torch.ones(B, H, W, dtype=torch.bool)
    real = nn.AdaptiveAvgPool2d(1)(data)
    torch.testing.assert_close(SparseFeatures.from_dense(data, everything, "s").global_pool().to_dense(), real)
    torch.testing.assert_close(DenseFeatures(data).global_pool().to_dense(), real)


def test_window_conv_macs_count_the_active_neighbour_pairs():
    """pairs x C_in / groups x C_out, the pairs counted here independently from the mask; the
    dense run's count agrees with torch's flop counter."""
    data, mask = _inputs(10)
    conv = nn.Conv2d(C, 2 * C, 5, padding=4, dilation=2, groups=C // 2).double()
    with MacCounter() as sparse:
        SparseFeatures.from_dense(data, mask, "s").conv(conv)
    ones = torch.ones(1, 1, 5, 5, dtype=torch.float64)
    m = mask[:, None].double()
    pairs = int((torch.nn.functional.conv2d(m, ones, padding=4, dilation=2) * m).sum())
    assert sparse.total("conv") == pairs * (C // (C // 2)) * 2 * C
    with MacCounter() as dense, FlopCounterMode(display=False) as flops:
        DenseFeatures(data).conv(conv)
    assert dense.total("conv") == flops.get_total_flops() // 2 == B * H * W * 2 * C * 2 * 25


def test_the_new_ops_make_no_host_sync():
    data, mask = _inputs(11)
    x = SparseFeatures.from_dense(data, mask, "s")
    dw = nn.Conv2d(C, C, 7, padding=6, dilation=2, groups=C).double()
    down = nn.Conv2d(C, C, 2, padding="same").double()
    ln, gn, fc = nn.LayerNorm(C).double(), nn.GroupNorm(2, C).double(), nn.Linear(C, C).double()
    se = SqueezeExcite(C, 2).double()

    def run():
        y = x.conv(dw).norm(ln).linear(fc).act(nn.GELU()).scale(fc.bias).add(x)
        return se(y.conv(down).norm(gn)).max_pool(3)
    run()
    assert count_host_syncs(run).total == 0


def test_a_wrong_window_conv_is_caught(monkeypatch):
    """The comparison can fail: a window conv that reads its kernel mirrored is caught."""
    from sparse_lc.ops import window

    taps = window._taps
    monkeypatch.setattr(window, "_taps", lambda weight: taps(weight).flip(0))
    data, mask = _inputs(12)
    with pytest.raises(AssertionError):
        _assert_same(_both(_conv(nn.Conv2d(C, C, 3, padding=1, groups=C)), data, mask))
