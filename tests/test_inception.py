"""The container ops Inception-ResNet-v2 needs (cat, scaled add, submanifold max pool), on both paths."""
from __future__ import annotations

import itertools

import pytest
import torch

from sparse_lc.ops import DenseFeatures, SparseFeatures, concat, spconv_backend

from conftest import IRNV2_SMALL, make_cascade, random_images


def _random_active_map(seed: int, shape=(2, 3, 7, 9), share: float = 0.6):
    """``[B, C, H, W]`` with many exact zeros (ties, as after a ReLU) and a random active mask."""
    gen = torch.Generator().manual_seed(seed)
    data = torch.relu(torch.randn(shape, generator=gen))
    mask = torch.rand(shape[0], *shape[2:], generator=gen) < share
    return data, mask


def _brute_force_max_pool(data: torch.Tensor, mask: torch.Tensor, dilation: int) -> torch.Tensor:
    """Max over the active pixels of each 3x3 window (dilated), zero at inactive pixels."""
    out = torch.zeros_like(data)
    batch, _, height, width = data.shape
    for b, y, x in itertools.product(range(batch), range(height), range(width)):
        if not mask[b, y, x]:
            continue
        window = [data[b, :, y + dy, x + dx] for dy, dx in itertools.product((-dilation, 0, dilation), repeat=2)
                  if 0 <= y + dy < height and 0 <= x + dx < width and mask[b, y + dy, x + dx]]
        out[b, :, y, x] = torch.stack(window).amax(dim=0)
    return out


@pytest.mark.parametrize("dilation", [1, 2])
def test_submanifold_max_pool_both_paths(dilation):
    data, mask = _random_active_map(dilation)
    expected = _brute_force_max_pool(data, mask, dilation)
    weights = torch.randn(data.shape)
    grads = []
    for make in (lambda d: DenseFeatures(d, mask), lambda d: SparseFeatures.from_dense(d, mask, "s")):
        leaf = data.clone().requires_grad_(True)
        out = make(leaf).max_pool(3, dilation).to_dense()
        torch.testing.assert_close(out, expected, atol=0, rtol=0)
        (out * weights).sum().backward()
        grads.append(leaf.grad)
    # ties (the zeros) go to the same pixel on both paths: gradients are equal, not just close
    torch.testing.assert_close(grads[0], grads[1], atol=0, rtol=0)
    assert (grads[0].permute(0, 2, 3, 1)[~mask] == 0).all()


def test_max_pool_without_mask_is_torch_max_pool():
    data = torch.randn(2, 4, 8, 10)
    pool = torch.nn.MaxPool2d(3, stride=1, padding=1)
    torch.testing.assert_close(DenseFeatures(data).max_pool(3).to_dense(), pool(data), atol=0, rtol=0)
    with pytest.raises(ValueError, match="odd window"):
        DenseFeatures(data).max_pool(2)


def test_cat_and_scaled_add_on_both_paths():
    data, mask = _random_active_map(3)
    other = torch.randn(data.shape)
    results = []
    for make in (lambda d: DenseFeatures(d, mask), lambda d: SparseFeatures.from_dense(d, mask, "s")):
        x, y = make(data), make(other)
        results.append((concat([x, y, x]).to_dense(), x.add(y, alpha=0.17).to_dense()))
    expected_cat = torch.cat([data, other, data], dim=1) * mask[:, None]
    expected_add = (data + 0.17 * other) * mask[:, None]
    for cat, add in results:
        torch.testing.assert_close(cat, expected_cat, atol=0, rtol=0)
        torch.testing.assert_close(add, expected_add, atol=1e-6, rtol=0)


def test_cat_refuses_different_active_sets():
    data, mask = _random_active_map(4)
    shifted = mask.roll(1, dims=2)
    with pytest.raises(ValueError, match="different active sets"):
        SparseFeatures.from_dense(data, mask, "s").cat([SparseFeatures.from_dense(data, shifted, "s")])
    with pytest.raises(ValueError, match="different sizes or active sets"):
        DenseFeatures(data, mask).cat([DenseFeatures(data, shifted)])


def test_each_rulebook_of_a_stage_is_built_once(monkeypatch):
    """Stage 2 has 1x7, 7x1 and 3x3 convs (blocks, Reduction-B's three branches, head): one
    rulebook each, shared across branches and blocks."""
    model = make_cascade(**IRNV2_SMALL).eval()
    builds = []
    real = spconv_backend.import_spconv("spconv.pytorch").ops.get_indice_pairs
    monkeypatch.setattr(spconv_backend.import_spconv("spconv.pytorch").ops, "get_indice_pairs",
                        lambda *a, **k: builds.append(tuple(a[4])) or real(*a, **k))
    f1 = model.backbone.stage1(random_images(batch=2))
    x = SparseFeatures.from_dense(f1, torch.rand(f1.shape[0], *f1.shape[2:]) < 0.5, "stage2")
    with torch.no_grad():
        out = model.heads[1](model.backbone.stage2(x))
    assert sorted(out.rulebooks()) == ["stage2/k1x7d2x2", "stage2/k3x3d2x2", "stage2/k7x1d2x2"]
    assert sorted(builds) == [(1, 7), (3, 3), (7, 1)], builds
