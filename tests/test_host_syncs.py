"""Host syncs per forward pass: at most one per sparse stage (how many pixels it has), plus the
assembly's own. Counted on the CPU with torch.profiler: the ops that would make the host wait
for a GPU (sparse_lc.analysis.dispatch.SYNC_OPS), by the line that called them."""
from __future__ import annotations

import pytest
import torch

from sparse_lc.analysis import nested_masks
from sparse_lc.analysis.dispatch import count_host_syncs, count_ops
from sparse_lc.ops import SparseFeatures, set_debug_checks

from conftest import CONVNEXT_SMALL, IRNV2_SMALL, MOBILENETV2_SMALL, make_cascade, random_images

STAGE_SITES = {"from_mask", "subset"}  # ActiveSet.from_mask (stage 2), ActiveSet.subset (stage 3)


def _syncs(model, images, **kwargs):
    with torch.no_grad():
        model(images, **kwargs)  # first pass: one-time set-up out of the count
        return count_host_syncs(lambda: model(images, labels=False, **kwargs))


def _functions(syncs):
    return sorted(site.rsplit(": ", 1)[-1] for site, n in syncs.sites.items() for _ in range(n))


@pytest.mark.parametrize("backbone", [dict(backbone="tiny"), dict(backbone="resnet18"), IRNV2_SMALL, CONVNEXT_SMALL,
                                      MOBILENETV2_SMALL],
                         ids=["tiny", "resnet18", "irnv2-small", "convnext-small", "mobilenetv2-small"])
def test_one_sync_per_sparse_stage(backbone):
    model = make_cascade(**backbone).fused()
    images = random_images(batch=2, height=64, width=96)
    masks = nested_masks((2, 8, 12), (0.4, 0.2), "clustered", 0)
    for kwargs in (dict(rho=0.9), dict(hard_masks=masks)):
        syncs = _syncs(model, images, **kwargs)
        assert _functions(syncs) == ["from_mask", "subset"], syncs.describe()
        assert syncs.count("spconv") == 0 and syncs.count("torch") == 0, syncs.describe()


def test_syncs_at_the_edges(tiny_model):
    images = random_images(batch=2, height=48, width=64)
    assert _functions(_syncs(tiny_model, images, rho=0.0)) == ["from_mask"]  # no hard pixel: stage 3 skipped
    assert _functions(_syncs(tiny_model, images, rho=1.0)) == ["from_mask"]  # every pixel: stage 3 reuses stage 2's
    assert _syncs(tiny_model, images, rho=1.0, execution="dense").total == 0  # the dense run: none


def test_the_assembly_syncs_only_inside_the_assembly(tiny_model):
    images = random_images(batch=2, height=48, width=64)
    with torch.no_grad():
        syncs = count_host_syncs(lambda: tiny_model(images, rho=0.9))
    outside = [site for site in syncs.sites if "assembly.py" not in site]
    assert set(site.rsplit(": ", 1)[-1] for site in outside) <= STAGE_SITES, syncs.describe()
    assert sum(syncs.sites[site] for site in outside) == 2


def test_hard_masks_are_checked_once():
    """The subset check of forced masks needs their values: once per pair of tensors."""
    model = make_cascade().eval()
    images = random_images(batch=2, height=48, width=64)
    hard1, hard2 = nested_masks((2, 6, 8), (0.5, 0.25), "clustered", 0)
    with torch.no_grad():
        first = count_host_syncs(lambda: model(images, hard_masks=(hard1, hard2), labels=False))
        again = count_host_syncs(lambda: model(images, hard_masks=(hard1, hard2), labels=False))
        hard2.logical_and_(hard1)  # changed in place (to the same values): checked again
        changed = count_host_syncs(lambda: model(images, hard_masks=(hard1, hard2), labels=False))
    assert first.total == 3 and again.total == 2 and changed.total == 3
    with pytest.raises(ValueError, match="subset"):
        model(images, hard_masks=(hard1 & False, hard2))


def test_debug_checks_catch_a_mask_outside_the_set():
    data = torch.randn(1, 4, 6, 6)
    mask = torch.zeros(1, 6, 6, dtype=torch.bool)
    mask[0, :3] = True
    x = SparseFeatures.from_dense(data, mask, "s")
    outside = mask.roll(3, dims=1)
    assert x.restrict(outside, "t").num_active == 0  # without the checks: only the pixels of the set
    previous = set_debug_checks(True)
    try:
        with pytest.raises(ValueError, match="outside this tensor's active set"):
            x.restrict(outside, "t")
    finally:
        set_debug_checks(previous)


def test_count_ops_counts_top_level_aten_ops():
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    counted = count_ops(lambda: torch.relu(a @ b + 1))
    assert counted.by_name == {"aten::matmul": 1, "aten::add": 1, "aten::relu": 1}
    assert counted.aten_ops == 3 and counted.kernel_launches is None


def test_count_host_syncs_names_the_calling_line():
    mask = torch.rand(4, 4) > 0.5
    syncs = count_host_syncs(lambda: (int(mask.sum()), mask.nonzero(), torch.equal(mask, mask)))
    assert syncs.total == 3
    assert all("test_host_syncs.py" in site for site in syncs.sites), syncs.sites
